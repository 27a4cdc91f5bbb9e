"""What an identity provider's SCIM bodies ask for, read into plain values before anything is written.

Every body is read in full first (a user's new attributes, a group's new
member set) and refused as a whole with a :class:`ScimError` naming the
attribute at fault, so a bad operation in the middle of a PATCH changes
nothing. Providers disagree on details the RFC leaves open, and all of
these are read the same way: Okta's ``{"op": "replace", "value": {"active":
false}}``, Entra ID's ``{"op": "Replace", "path": "active", "value":
"False"}`` (capitalised operations, booleans as strings, dotted and filtered
paths such as ``emails[type eq "work"].value``), and the RFC 7644 examples.
Names of attributes and operations are case-insensitive, as the RFC says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db.models import Q

from accounts.scim.schema import ENTERPRISE_USER, GROUP, PATCH_OP, USER
from jitportal.errors import DomainError


class ScimError(DomainError):
    """A refusal in SCIM's terms: an HTTP status and, for a 400 or 409, RFC 7644's ``scimType``."""

    def __init__(self, message: str, *, scim_type: str | None = None, status: int = 400):
        super().__init__(message, code=scim_type or "invalid")
        self.scim_type = scim_type
        self.status_code = status


def invalid_value(message: str) -> ScimError:
    return ScimError(message, scim_type="invalidValue")


# Attributes of the core User schema (and anything under the enterprise extension) the portal
# accepts and does not keep: providers send them whatever one maps, and refusing them would stop
# provisioning. A password is never taken: people sign in through the identity provider.
_USER_IGNORED = {
    "displayname",
    "nickname",
    "profileurl",
    "title",
    "usertype",
    "preferredlanguage",
    "locale",
    "timezone",
    "password",
    "phonenumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509certificates",
    "meta",
    "schemas",
}
_NAME_IGNORED = {"formatted", "middlename", "honorificprefix", "honorificsuffix"}
_MAX_LENGTH = {"external_id": 255, "first_name": 150, "last_name": 150, "email": 254}
_EMAIL_PATH = re.compile(r"^emails(?:\[(?P<filter>[^\]]*)\])?(?:\.(?P<sub>\w+))?$")


@dataclass(frozen=True)
class UserState:
    """The attributes of a user that SCIM writes, as the ``User`` columns they become."""

    username: str
    external_id: str = ""
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    is_active: bool = True

    FIELDS = ("username", "external_id", "first_name", "last_name", "email", "is_active")

    @classmethod
    def of(cls, user) -> UserState:
        return cls(**{name: getattr(user, name) for name in cls.FIELDS})


def _path(raw: object) -> str:
    """An attribute path in lower case, the core schema's URN prefix taken off."""
    if not isinstance(raw, str) or not raw.strip():
        raise ScimError("path must be a non-empty string", scim_type="invalidPath")
    path = raw.strip()
    for urn in (USER, GROUP):
        if path.lower().startswith(urn.lower() + ":"):
            path = path[len(urn) + 1 :]
    return path.lower()


def _text(value: object, *, attribute: str, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid_value(f"{attribute} must be a string")
    text = value.strip()
    if len(text) > _MAX_LENGTH[field]:
        raise invalid_value(f"{attribute} is longer than {_MAX_LENGTH[field]} characters")
    return text


def _username(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid_value("userName must be a non-empty string")
    username = value.strip()
    if len(username) > 150:
        raise invalid_value("userName is longer than 150 characters")
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError:
        raise invalid_value("userName may contain only letters, digits and @ . + - _") from None
    return username


def _boolean(value: object, *, attribute: str) -> bool:
    """A boolean, or the strings "true"/"false" in any case (Entra ID sends ``"False"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise invalid_value(f"{attribute} must be true or false")


def _email_of(value: object) -> str:
    """The one address kept from a list of emails: the primary, else the work one, else the first."""
    if value is None:
        return ""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise invalid_value("emails must be a list of objects with a value")
    if not value:
        return ""
    chosen = next((item for item in value if item.get("primary") in (True, "true", "True")), None)
    chosen = chosen or next((item for item in value if str(item.get("type", "")).lower() == "work"), value[0])
    return _text(chosen.get("value"), attribute="emails.value", field="email")


def _kept_email_filter(expression: str | None) -> bool:
    """Whether a filtered emails path names the address kept (work or primary), not another one."""
    if expression is None:
        return True
    compact = expression.replace(" ", "").lower()
    return compact in ('typeeq"work"', "primaryeqtrue", 'primaryeq"true"')


# --- users ----------------------------------------------------------------------------------


_USER_SCALARS: dict[str, Callable[[object], dict[str, Any]]] = {
    "username": lambda value: {"username": _username(value)},
    "externalid": lambda value: {"external_id": _text(value, attribute="externalId", field="external_id")},
    "active": lambda value: {"is_active": _boolean(value, attribute="active")},
    "name.givenname": lambda value: {"first_name": _text(value, attribute="name.givenName", field="first_name")},
    "name.familyname": lambda value: {"last_name": _text(value, attribute="name.familyName", field="last_name")},
}


def _user_set(state: UserState, path: str, value: object, *, user_id: str | None, whole: bool = False) -> UserState:
    """``state`` with the attribute at ``path`` set to ``value`` (``path`` from :func:`_path`).

    ``whole`` replaces a complex attribute (a PUT's ``name``) rather than
    only the sub-attributes given (a PATCH's).
    """
    if path.startswith(ENTERPRISE_USER.lower()) or path.split(".")[0] in _USER_IGNORED:
        return state
    if path in _USER_SCALARS:
        return replace(state, **_USER_SCALARS[path](value))
    if path == "name":
        return _name_set(state, value, user_id=user_id, whole=whole)
    if path.startswith("name.") and path[5:] in _NAME_IGNORED:
        return state
    if path == "groups" or path.startswith(("groups[", "groups.")):
        raise ScimError("groups is read-only on a user: change the members of the group", scim_type="mutability")
    if path == "id":
        if value is not None and str(value) != user_id:
            raise ScimError("id is assigned by the portal and cannot change", scim_type="mutability")
        return state
    match = _EMAIL_PATH.match(path)
    if match:
        return _email_set(state, value, expression=match["filter"], sub=match["sub"])
    raise ScimError(f"{path!r} is not an attribute of a User", scim_type="invalidPath")


def _name_set(state: UserState, value: object, *, user_id: str | None, whole: bool) -> UserState:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise invalid_value("name must be an object")
    if whole:
        state = replace(state, first_name="", last_name="")
    for key, item in value.items():
        state = _user_set(state, f"name.{str(key).lower()}", item, user_id=user_id)
    return state


def _email_set(state: UserState, value: object, *, expression: str | None, sub: str | None) -> UserState:
    if expression is None and sub is None:
        return replace(state, email=_email_of(value))
    if sub not in (None, "value") or not _kept_email_filter(expression):
        return state  # another address, or its type or primary flag: the portal keeps one address
    if isinstance(value, list):
        return replace(state, email=_email_of(value))
    return replace(state, email=_text(value, attribute="emails.value", field="email"))


def _user_clear(state: UserState, path: str, *, user_id: str | None) -> UserState:
    if path in ("username", "active"):
        raise ScimError(f"{path} is required and cannot be removed", scim_type="mutability")
    if path == "name":
        return replace(state, first_name="", last_name="")
    return _user_set(state, path, None, user_id=user_id)


def user_from_document(body: object, *, current: UserState | None = None, user_id: str | None = None) -> UserState:
    """The user a POST (``current`` None) or PUT body describes.

    A PUT replaces the attributes it may: a name or email it leaves out is
    cleared. ``active`` and ``externalId`` left out keep their value, so an
    update that forgets them neither re-enables nor unlinks anyone.
    """
    if not isinstance(body, dict):
        raise ScimError("the body must be a JSON object", scim_type="invalidSyntax")
    keys = {str(key).lower(): key for key in body}
    if "username" not in keys:
        raise invalid_value("userName is required")
    state = replace(current, first_name="", last_name="", email="") if current else UserState(username="")
    for key in keys.values():
        path = _path(key)
        if path == "groups" or (path == "id" and current is None):
            continue  # read-only attributes in a full document are ignored (RFC 7643 section 7)
        state = _user_set(state, path, body[key], user_id=user_id, whole=True)
    return state


@dataclass(frozen=True)
class Operation:
    op: str  # add, replace or remove
    path: str | None
    value: object = None
    has_value: bool = False


def operations_from_document(body: object) -> list[Operation]:
    """The operations of a PATCH body (RFC 7644 section 3.5.2), refused whole if one is malformed."""
    if not isinstance(body, dict):
        raise ScimError("the body must be a JSON object", scim_type="invalidSyntax")
    unknown = sorted(key for key in body if str(key).lower() not in ("schemas", "operations"))
    if unknown:
        raise ScimError(f"unknown attribute {unknown[0]!r} in a PatchOp", scim_type="invalidSyntax")
    keys = {str(key).lower(): key for key in body}
    schemas = body.get(keys.get("schemas", "schemas"))
    if schemas is not None and (not isinstance(schemas, list) or PATCH_OP not in schemas):
        raise ScimError(f"schemas must name {PATCH_OP}", scim_type="invalidSyntax")
    raw = body.get(keys.get("operations", "Operations"))
    if not isinstance(raw, list) or not raw:
        raise ScimError("Operations must be a non-empty list", scim_type="invalidSyntax")
    operations = []
    for item in raw:
        if not isinstance(item, dict):
            raise ScimError("each operation must be an object", scim_type="invalidSyntax")
        fields = {str(key).lower(): value for key, value in item.items()}
        extra = sorted(set(fields) - {"op", "path", "value"})
        if extra:
            raise ScimError(f"unknown attribute {extra[0]!r} in an operation", scim_type="invalidSyntax")
        op = fields.get("op")
        if not isinstance(op, str) or op.lower() not in ("add", "replace", "remove"):
            raise ScimError(f"op must be add, replace or remove, not {op!r}", scim_type="invalidSyntax")
        path = _path(fields["path"]) if fields.get("path") is not None else None
        if op.lower() == "remove" and path is None:
            raise ScimError("remove needs a path", scim_type="noTarget")
        if op.lower() != "remove" and "value" not in fields:
            raise invalid_value(f"{op} needs a value")
        operations.append(Operation(op.lower(), path, fields.get("value"), "value" in fields))
    return operations


def user_patched(state: UserState, operations: Iterable[Operation], *, user_id: str) -> UserState:
    for operation in operations:
        if operation.op == "remove":
            state = _user_clear(state, operation.path or "", user_id=user_id)
        elif operation.path is not None:
            state = _user_set(state, operation.path, operation.value, user_id=user_id)
        elif isinstance(operation.value, dict):
            for key, value in operation.value.items():
                state = _user_set(state, _path(key), value, user_id=user_id)
        else:
            raise invalid_value(f"{operation.op} without a path needs an object of attributes as its value")
    return state


# --- groups ---------------------------------------------------------------------------------

_MEMBER_PATH = re.compile(r'^members\[\s*value\s+eq\s+"(?P<value>[^"]*)"\s*\]$')


def member_ids(value: object) -> set[int]:
    """The user ids in a list of members (``[{"value": "42"}, ...]``)."""
    if not isinstance(value, list):
        raise invalid_value("members must be a list of objects with a value")
    ids = set()
    for item in value:
        raw = item.get("value") if isinstance(item, dict) else None
        ids.add(_member_id(raw))
    return ids


def is_id(text: str) -> bool:
    """A primary key as text: ASCII digits only (``"²".isdigit()`` is true, ``int("²")`` fails), in range."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def _member_id(raw: object) -> int:
    text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not is_id(text):
        raise invalid_value(f"members: {raw!r} is not the id of a user")
    return int(text)


def _group_attribute(path: str, value: object, *, name: str, group_id: str) -> None:
    """The attributes other than members: accepted only when they say what already is."""
    if path == "displayname":
        if value != name:
            raise ScimError(
                "displayName cannot change: portal groups are named by the policy file", scim_type="mutability"
            )
    elif path == "id":
        if str(value) != group_id:
            raise ScimError("id is assigned by the portal and cannot change", scim_type="mutability")
    elif path not in ("externalid", "schemas", "meta"):
        raise ScimError(f"{path!r} is not an attribute of a Group", scim_type="invalidPath")


def members_patched(members: set[int], operations: Iterable[Operation], *, name: str, group_id: str) -> set[int]:
    """The member set ``operations`` make of ``members``; other attributes may only restate themselves."""
    members = set(members)
    for operation in operations:
        path = operation.path
        if operation.op == "remove":
            path = path or ""
            match = _MEMBER_PATH.match(path)
            if match:
                members.discard(_member_id(match["value"]))
            elif path == "members":
                # Entra ID names the members to remove in the value; without one, all go (RFC 7644).
                members = members - member_ids(operation.value) if operation.has_value else set()
            else:
                raise ScimError(f"{path!r} cannot be removed from a Group", scim_type="invalidPath")
            continue
        attributes = {path: operation.value} if path is not None else operation.value
        if not isinstance(attributes, dict):
            raise invalid_value(f"{operation.op} without a path needs an object of attributes as its value")
        for key, value in attributes.items():
            key = _path(key) if path is None else key
            if key == "members":
                ids = member_ids(value)
                members = members | ids if operation.op == "add" else ids
            elif _MEMBER_PATH.match(key):
                raise ScimError("a filtered members path can only be removed", scim_type="invalidPath")
            else:
                _group_attribute(key, value, name=name, group_id=group_id)
    return members


def group_members_from_document(body: object, *, name: str, group_id: str) -> set[int]:
    """The member set a PUT body gives the group (all of it: members left out are removed)."""
    if not isinstance(body, dict):
        raise ScimError("the body must be a JSON object", scim_type="invalidSyntax")
    members: set[int] = set()
    for key, value in body.items():
        path = _path(key)
        if path == "members":
            members = member_ids(value)
        else:
            _group_attribute(path, value, name=name, group_id=group_id)
    return members


# --- filters --------------------------------------------------------------------------------

_FILTER = re.compile(r'^\s*(?P<attribute>[\w.:$-]+)\s+eq\s+"(?P<value>(?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)


def filter_q(expression: str, attributes: dict[str, tuple[str, bool]]) -> Q:
    """The rows a filter ``attribute eq "value"`` names; ``attributes``: name -> (column, case-exact).

    One equality is what identity providers send to find a user or group
    before creating or linking it; anything richer is a 400 ``invalidFilter``.
    """
    match = _FILTER.match(expression)
    if not match:
        raise ScimError('filter must be of the form attribute eq "value"', scim_type="invalidFilter")
    attribute = _path(match["attribute"])
    if attribute not in attributes:
        raise ScimError(
            f"cannot filter on {match['attribute']!r} (only {', '.join(sorted(attributes))})",
            scim_type="invalidFilter",
        )
    try:
        value = json.loads(f'"{match["value"]}"')
    except ValueError:
        raise ScimError("the filter's value is not a valid string", scim_type="invalidFilter") from None
    column, case_exact = attributes[attribute]
    if column == "pk":
        return Q(pk=int(value)) if is_id(value) else Q(pk__in=[])
    return Q(**{column if case_exact else f"{column}__iexact": value})
