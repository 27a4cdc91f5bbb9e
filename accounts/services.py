"""Rules for role definitions (shared by the policy loader and the admin form), and API tokens."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import ApiToken, OidcIdentity, User
from audit.services import audit_record, audit_record_many
from inventory.models import Resource
from inventory.services import label_key_clean, label_value_text
from jitportal.errors import DomainError


def role_clean_kinds(value: object) -> list[str]:
    kinds = _string_list(value, field="resource_kinds")
    unknown = [kind for kind in kinds if kind not in Resource.Kind.values]
    if unknown:
        raise DomainError(
            f"{', '.join(map(repr, unknown))} is not one of {', '.join(Resource.Kind.values)}", field="resource_kinds"
        )
    return kinds


def role_clean_selector(value: object) -> dict[str, list[str]]:
    """key -> list of allowed values, ``"*"`` for any; a single value becomes a one-item list.

    Values are kept as strings: a string where a list belongs would otherwise
    be read letter by letter.
    """
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise DomainError("must be a mapping of label key to a list of values ('*' for any)", field="resource_labels")
    selector: dict[str, list[str]] = {}
    for key, values in value.items():
        label_key_clean(key, field="resource_labels")
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise DomainError(f"{key}: needs at least one value ('*' for any)", field="resource_labels")
        clean = []
        for item in values:
            # Numbers are accepted as resource label values too, so the selector agrees with them.
            text = label_value_text(item)
            if not text:
                raise DomainError(f"{key}: {item!r} is not a label value", field="resource_labels")
            clean.append(text)
        selector[key] = list(dict.fromkeys(clean))
    return selector


def role_clean_logins(value: object) -> list[str]:
    logins = _string_list(value, field="logins")
    for login in logins:
        # A login becomes the certificate principal "login@resource"; these would make it ambiguous.
        if any(ch.isspace() or ch in "@," for ch in login):
            raise DomainError(f"{login!r} may not contain spaces, '@' or ','", field="logins")
        if len(login) > 64:
            raise DomainError(f"{login[:20]!r}… is longer than 64 characters", field="logins")
    return logins


def role_clean_reason_pattern(value: object) -> str:
    """A regular expression the whole reason must match; blank for none. One that does not compile is refused."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise DomainError("must be text (a regular expression)", field="reason_pattern")
    try:
        re.compile(value)
    except re.error as exc:
        raise DomainError(f"{value!r} is not a valid regular expression: {exc}", field="reason_pattern") from None
    return value


def _string_list(value: object, *, field: str) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise DomainError("must be a list of non-empty strings", field=field)
    return list(dict.fromkeys(value))


# --- API tokens ------------------------------------------------------------------------


def _token_audit_data(token: ApiToken, *, username: str) -> dict:
    """The one payload of every token event, whoever made or revoked it and from where."""
    return {
        "user": username,
        "name": token.name,
        "expires_at": token.expiry.isoformat() if token.expiry else None,
        "can_check_access": token.can_check_access,
        "mfa_verified_at": token.mfa_verified_at.isoformat() if token.mfa_verified_at else None,
    }


def token_create(
    *,
    user,
    name: str = "",
    lifetime: timedelta | None = None,
    can_check_access: bool = False,
    mfa_verified_at: datetime | None = None,
    by,
) -> tuple[ApiToken, str]:
    """Make an API token for ``user``, living ``lifetime`` (default ``REST_KNOX['TOKEN_TTL']``); audited.

    Returns the row and the secret, which is shown once and stored only as a
    hash. ``by`` is who asked: the user (the API) or an administrator.
    ``mfa_verified_at`` is the creating session's second-factor verification
    (``accounts.mfa.mfa_session_verified_at``): the token then reviews roles
    with ``review_requires_mfa`` until that verification is 15 minutes old.
    """
    options = {} if lifetime is None else {"expiry": lifetime}
    with transaction.atomic():
        token, secret = ApiToken.objects.create(
            user=user,
            name=name or "",
            can_check_access=can_check_access,
            mfa_verified_at=mfa_verified_at,
            **options,
        )
        audit_record(
            action="token.created",
            actor=by,
            target_type="apitoken",
            target_id=token.token_key,
            data=_token_audit_data(token, username=user.username),
        )
    return token, secret


def token_revoke(*, tokens: Iterable[ApiToken], by) -> int:
    """Revoke ``tokens`` at once (deleting the rows), one audit event each; returns how many.

    The rows are locked and re-read, so a token revoked meanwhile by someone
    else is neither audited twice nor counted. A constant number of queries.
    """
    digests = [token.digest for token in tokens]
    with transaction.atomic():
        locked = list(
            ApiToken.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(digest__in=digests)
            .order_by("created", "digest")
        )
        if not locked:
            return 0
        audit_record_many(
            {
                "action": "token.revoked",
                "actor": by,
                "target_type": "apitoken",
                "target_id": token.token_key,
                "data": _token_audit_data(token, username=token.user.username),
            }
            for token in locked
        )
        ApiToken.objects.filter(digest__in=[token.digest for token in locked]).delete()
    return len(locked)


def tokens_delete_expired(*, batch_size: int = 500) -> int:
    """Delete API tokens past their expiry, one ``token.expired`` event each; returns how many.

    Authentication already refuses them; this keeps the table small. Each
    batch is locked and deleted in one transaction, so two sweeps at once
    neither audit a token twice nor miss one.
    """
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(
                ApiToken.objects.select_for_update(of=("self",), skip_locked=True)
                .select_related("user")
                .filter(expiry__lte=timezone.now())
                .order_by("expiry", "digest")[:batch_size]
            )
            if not batch:
                return deleted
            audit_record_many(
                {
                    "action": "token.expired",
                    "target_type": "apitoken",
                    "target_id": token.token_key,
                    "data": _token_audit_data(token, username=token.user.username),
                }
                for token in batch
            )
            ApiToken.objects.filter(digest__in=[token.digest for token in batch]).delete()
        deleted += len(batch)


# --- OIDC sign-in -----------------------------------------------------------------------

_USERNAME_MAX = 150


def _claim_text(claims: Mapping[str, Any], name: str, *, limit: int) -> str:
    value = claims.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _claim_groups(claims: Mapping[str, Any]) -> list[str]:
    """The groups claim as a list of names; absent is none (so every portal group is removed)."""
    value = claims.get(settings.JITPORTAL_OIDC_GROUPS_CLAIM)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise DomainError(
            f"the {settings.JITPORTAL_OIDC_GROUPS_CLAIM!r} claim is not a list", code="oidc_claims_invalid"
        )
    return [item for item in value if isinstance(item, str)]


def _claim_identity(claims: Mapping[str, Any]) -> tuple[str, str]:
    """The subject and the username the claims name, or a refusal saying which is missing."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise DomainError("the ID token has no subject", code="oidc_claims_invalid")
    claim = settings.JITPORTAL_OIDC_USERNAME_CLAIM
    username = claims.get(claim)
    if not isinstance(username, str) or not username.strip():
        raise DomainError(f"the {claim!r} claim is missing", code="oidc_claims_invalid")
    username = username.strip()
    if len(username) > _USERNAME_MAX:
        raise DomainError(f"the {claim!r} claim is longer than {_USERNAME_MAX} characters", code="oidc_claims_invalid")
    return subject, username


def _oidc_user_locked(*, issuer: str, subject: str, username: str) -> tuple[User | None, bool]:
    """The user this identity signs in as, locked (None: a new one), and whether the identity is bound yet."""
    identity = OidcIdentity.objects.filter(issuer=issuer, subject=subject).first()
    if identity is not None:
        user = User.objects.select_for_update().get(pk=identity.user_id)
        if user.username != username and User.objects.filter(username=username).exclude(pk=user.pk).exists():
            raise DomainError(f"{username!r} belongs to another portal user", code="oidc_subject_mismatch")
        return user, True
    named = User.objects.select_for_update().filter(username=username).first()
    if named is not None and OidcIdentity.objects.filter(user=named).exists():
        raise DomainError(
            f"{username!r} is bound to another account at the identity provider", code="oidc_subject_mismatch"
        )
    return named, False


def _user_groups_set(user: User, names: list[str], *, created: bool) -> tuple[list[str], list[str], int]:
    """Make the user's groups exactly the portal groups among ``names``: (added, removed, how many unknown)."""
    wanted = dict(Group.objects.filter(name__in=names).values_list("name", "pk"))
    held = {} if created else dict(user.groups.values_list("name", "pk"))
    added = sorted(set(wanted) - set(held))
    removed = sorted(set(held) - set(wanted))
    if removed:
        user.groups.remove(*(held[name] for name in removed))
    if added:
        user.groups.add(*(wanted[name] for name in added))
    return added, removed, len(set(names) - set(wanted))


def user_sign_in_oidc(*, issuer: str, claims: Mapping[str, Any]) -> User:
    """Create or update the user the provider vouched for, set their groups, audit ``auth.login``.

    ``claims`` are the verified ID token's (with the userinfo endpoint's
    answer). The user's groups become exactly the portal groups named by the
    groups claim: one the provider no longer lists is removed, one the
    portal does not have is ignored. The identity (issuer, subject) is bound
    to the user at the first sign-in, so another subject later claiming the
    same username is refused. The user row is locked while it changes, so
    two sign-ins at once leave one consistent set of groups.
    """
    subject, username = _claim_identity(claims)
    wanted_names = _claim_groups(claims)
    try:
        return _oidc_sign_in(issuer=issuer, subject=subject, username=username, claims=claims, groups=wanted_names)
    except IntegrityError as exc:
        # Two first sign-ins of one person at once: the other created the user or bound the identity.
        raise DomainError("a sign-in of the same account ran at the same moment; try again", code="conflict") from exc


def _oidc_sign_in(*, issuer: str, subject: str, username: str, claims: Mapping[str, Any], groups: list[str]) -> User:
    with transaction.atomic():
        user, bound = _oidc_user_locked(issuer=issuer, subject=subject, username=username)
        created = user is None
        if user is None:
            user = User(username=username)
            user.set_unusable_password()
        elif not user.is_active:
            raise DomainError(f"{user.username!r} is deactivated", code="user_inactive")
        changed = []
        for field, value in (
            ("username", username),
            ("email", _claim_text(claims, "email", limit=254)),
            ("first_name", _claim_text(claims, "given_name", limit=150)),
            ("last_name", _claim_text(claims, "family_name", limit=150)),
        ):
            if getattr(user, field) != value:
                setattr(user, field, value)
                changed.append(field)
        user.last_login = timezone.now()
        user.save(update_fields=None if created else [*changed, "last_login"])
        if not bound:
            OidcIdentity.objects.create(user=user, issuer=issuer, subject=subject)
        added, removed, unknown = _user_groups_set(user, groups, created=created)
        audit_record(
            action="auth.login",
            actor=user,
            target_type="user",
            target_id=user.username,
            data={
                "method": "oidc",
                "issuer": issuer,
                "subject": subject,
                "created": created,
                "updated": [] if created else changed,
                "groups_added": added,
                "groups_removed": removed,
                # Providers send every group a person is in; only the count of those the portal lacks is kept.
                "groups_unknown": unknown,
            },
        )
    return user
