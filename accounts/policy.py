"""Policy as code: make groups, users, roles and resources match a YAML document.

The document names objects; each object it names is made to match it exactly
(a field it leaves out takes the model default, a user's groups and a role's
groups become exactly the listed ones), so the file is the source of truth for
what it names. Objects it does not name are left alone unless ``prune`` is
asked for, and then only in the sections the document lists (a document
without ``resources:`` never prunes resources; ``resources: []`` means "none").

Everything is checked before anything is written, and the whole apply is one
transaction: a bad entry changes nothing. A second apply of the same document
writes nothing.

This module does not audit (``requests_app`` depends on ``accounts``, not the
other way round); entry points record ``PolicyResult`` in the audit log.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NoReturn

import yaml
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, models, transaction
from django.db.models import Count

from accounts.models import MAX_ROLE_DURATION, Role, User
from accounts.services import role_clean_kinds, role_clean_logins, role_clean_selector
from inventory.models import Resource, ResourceLabel
from inventory.services import resource_upsert, validate_labels
from jitportal.durations import format_duration, parse_duration
from jitportal.errors import DomainError

SECTIONS = ("groups", "users", "roles", "resources")
USER_KEYS = (
    "username",
    "email",
    "password",
    "groups",
    "staff",
    "superuser",
    "active",
    "reviewer",
    "first_name",
    "last_name",
)
# ``reviewer: true`` lets a user work the review queue in the admin. Named by
# string, not imported: requests_app depends on accounts, not the other way round.
REVIEW_PERMISSION = ("requests_app", "review_accessrequest")
ROLE_KEYS = (
    "name",
    "description",
    "resource_kinds",
    "resource_labels",
    "logins",
    "max_duration",
    "requestable_by",
    "reviewers",
    "approvals",
    "denials",
    "reason",
    "reason_hint",
    "auto_approve",
    "pending_ttl",
    "ssh_permit_pty",
    "ssh_permit_port_forwarding",
    "ssh_permit_agent_forwarding",
)
RESOURCE_KEYS = ("kind", "name", "address", "labels", "description")
_SSH_FLAGS = ("ssh_permit_pty", "ssh_permit_port_forwarding", "ssh_permit_agent_forwarding")
# PositiveSmallIntegerField holds up to this on every database.
MAX_THRESHOLD = 32767


# --- result -------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One object the apply created, updated or deleted."""

    action: str  # "created" | "updated" | "deleted"
    kind: str  # "group" | "user" | "role" | "resource"
    name: str
    detail: str = ""

    @property
    def subject(self) -> str:
        text = f"{self.kind} {self.name}"
        return f"{text} ({self.detail})" if self.detail else text

    def __str__(self) -> str:
        return f"{self.action} {self.subject}"


@dataclass
class PolicyResult:
    changes: list[Change] = field(default_factory=list)
    dry_run: bool = False

    def _subjects(self, action: str) -> list[str]:
        return [c.subject for c in self.changes if c.action == action]

    @property
    def created(self) -> list[str]:
        return self._subjects("created")

    @property
    def updated(self) -> list[str]:
        return self._subjects("updated")

    @property
    def deleted(self) -> list[str]:
        return self._subjects("deleted")

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def lines(self) -> list[str]:
        return [str(c) for c in self.changes]

    def summary(self) -> str:
        if not self.changes:
            return "no changes"
        return f"{len(self.created)} created, {len(self.updated)} updated, {len(self.deleted)} deleted"


# --- loading ------------------------------------------------------------------


class _PolicyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping.

    Plain YAML keeps the last value silently, so a repeated ``approvals:`` or a
    second ``roles:`` section would quietly drop what came first.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def policy_load(text: str) -> dict:
    """Parse a policy document; YAML mistakes become one readable DomainError."""
    try:
        data = yaml.load(text, Loader=_PolicyLoader)  # a SafeLoader subclass: as safe as safe_load
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise DomainError(f"the policy is not valid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise DomainError(f"the policy is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        raise DomainError("the policy is empty")
    if not isinstance(data, dict):
        raise DomainError(f"the policy must be a mapping with the keys {', '.join(SECTIONS)}")
    return data


# --- validation ---------------------------------------------------------------


def _one_line(value: object) -> str | None:
    if isinstance(value, str) and value and value.isprintable() and len(value) <= 253:
        return value
    return None


class _Entry:
    """One entry of a section, with helpers that fail naming the entry and field."""

    def __init__(self, section: str, index: int, raw: object, name: str | None = None):
        self.path = f"{section}[{index}]"
        self.label = f"{self.path} ({name})" if name else self.path
        if not isinstance(raw, dict):
            raise DomainError(f"{self.path}: must be a mapping", field=self.path)
        self.raw: dict = raw

    def fail(self, key: str, message: str) -> NoReturn:
        raise DomainError(f"{self.label}.{key}: {message}", field=f"{self.path}.{key}")

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.raw:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f" (did you mean {hint[0]}?)" if hint else f" (allowed: {', '.join(allowed)})"
                self.fail(str(key), f"unknown key{suggestion}")

    def text(self, key: str, *, max_length: int, required: bool = False) -> str:
        value = self.raw.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return ""
        if not isinstance(value, str):
            self.fail(key, "must be text")
        if required and not value.strip():
            self.fail(key, "is required")
        if len(value) > max_length:
            self.fail(key, f"must be at most {max_length} characters")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, "must be true or false")
        return value

    def names(self, key: str, *, max_length: int = 150) -> list[str]:
        """A list of strings (a single string is a one-item list), duplicates dropped, order kept."""
        value = self.raw.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.fail(key, "must be a list of names")
        for item in value:
            if not isinstance(item, str) or not item.strip():
                self.fail(key, f"{item!r} is not a name")
            if len(item) > max_length:
                self.fail(key, f"{item[:20]!r}… is longer than {max_length} characters")
        return list(dict.fromkeys(value))

    def duration(self, key: str, default: timedelta, *, maximum: timedelta | None = None) -> timedelta:
        value = self.raw.get(key)
        if value is None:
            return default
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            self.fail(key, str(exc))
        if maximum is not None and parsed > maximum:
            self.fail(key, f"{value} is longer than the {format_duration(maximum)} maximum")
        return parsed

    def threshold(self, key: str) -> int:
        value = self.raw.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THRESHOLD:
            self.fail(key, f"must be a whole number from 1 to {MAX_THRESHOLD}, not {value!r}")
        return value


@dataclass
class _UserSpec:
    entry: _Entry
    username: str
    password: str | None
    groups: list[str]
    fields: dict[str, Any]  # model field -> value
    reviewer: bool = False


@dataclass
class _RoleSpec:
    entry: _Entry
    name: str
    fields: dict[str, Any]
    requestable_by: list[str]
    reviewers: list[str]


@dataclass
class _ResourceSpec:
    entry: _Entry
    kind: str
    name: str
    address: str
    labels: dict[str, str]
    description: str

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class _Plan:
    sections: set[str]
    groups: list[str]
    users: list[_UserSpec]
    roles: list[_RoleSpec]
    resources: list[_ResourceSpec]


# File key -> User field; the order is the order changes are reported in.
_USER_FIELDS = {
    "email": "email",
    "first_name": "first_name",
    "last_name": "last_name",
    "staff": "is_staff",
    "superuser": "is_superuser",
    "active": "is_active",
}


def _section(data: dict, name: str) -> list:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DomainError(f"{name}: must be a list", field=name)
    return value


def _parse_groups(items: list) -> list[str]:
    seen: dict[str, int] = {}
    for i, name in enumerate(items):
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise DomainError(f"groups[{i}]: {name!r} is not a group name", field=f"groups[{i}]")
        if len(name) > 150:
            raise DomainError(f"groups[{i}]: is longer than 150 characters", field=f"groups[{i}]")
        if name in seen:
            raise DomainError(f"groups[{i}] ({name}): listed twice (also groups[{seen[name]}])", field=f"groups[{i}]")
        seen[name] = i
    return list(seen)


def _parse_user(index: int, raw: object) -> _UserSpec:
    entry = _Entry("users", index, raw, _one_line(raw.get("username")) if isinstance(raw, dict) else None)
    username = entry.text("username", max_length=150, required=True)
    try:
        User.username_validator(username)
    except ValidationError:
        entry.fail("username", f"{username!r} may contain only letters, digits and @ . + - _")
    entry.check_keys(USER_KEYS)
    fields: dict[str, Any] = {
        "email": entry.text("email", max_length=254),
        "first_name": entry.text("first_name", max_length=150),
        "last_name": entry.text("last_name", max_length=150),
        "is_staff": entry.flag("staff", False),
        "is_superuser": entry.flag("superuser", False),
        "is_active": entry.flag("active", True),
    }
    if fields["email"]:
        try:
            validate_email(fields["email"])
        except ValidationError:
            entry.fail("email", f"{fields['email']!r} is not an email address")
    password = entry.raw.get("password")
    if password is not None and (not isinstance(password, str) or not password):
        entry.fail("password", "must be non-empty text (leave it out for a user who cannot log in with one)")
    reviewer = entry.flag("reviewer", False)
    if reviewer:
        # The queue lives in the admin, which only staff can open.
        if entry.raw.get("staff") is False:
            entry.fail("staff", "a reviewer works the queue in the admin, so must be staff (leave staff out)")
        fields["is_staff"] = True
    return _UserSpec(entry, username, password, entry.names("groups"), fields, reviewer)


def _shared_rule(entry: _Entry, rule, value):
    """Run one of the role rules that the admin form applies too, naming this entry on failure."""
    try:
        return rule(value)
    except DomainError as exc:
        entry.fail(exc.field or "", exc.message)


def _parse_role(index: int, raw: object) -> _RoleSpec:
    entry = _Entry("roles", index, raw, _one_line(raw.get("name")) if isinstance(raw, dict) else None)
    name = entry.text("name", max_length=100, required=True)
    if name != name.strip():
        entry.fail("name", "may not start or end with spaces")
    entry.check_keys(ROLE_KEYS)
    kinds = _shared_rule(entry, role_clean_kinds, entry.names("resource_kinds", max_length=32))
    reason = entry.raw.get("reason", Role.ReasonMode.OPTIONAL)
    if reason not in Role.ReasonMode.values:
        entry.fail("reason", f"must be one of {', '.join(Role.ReasonMode.values)}, not {reason!r}")
    fields: dict[str, Any] = {
        "description": entry.text("description", max_length=10_000),
        "resource_kinds": kinds,
        "resource_labels": _shared_rule(entry, role_clean_selector, entry.raw.get("resource_labels")),
        "logins": _shared_rule(entry, role_clean_logins, entry.names("logins", max_length=64)),
        "max_duration": entry.duration("max_duration", timedelta(hours=1), maximum=MAX_ROLE_DURATION),
        "approvals": entry.threshold("approvals"),
        "denials": entry.threshold("denials"),
        "reason": str(reason),
        "reason_hint": entry.text("reason_hint", max_length=255),
        "auto_approve": entry.flag("auto_approve", False),
        "pending_ttl": entry.duration("pending_ttl", timedelta(hours=24)),
        # Extensions of the SSH certificates signed for this role's grants.
        **{key: entry.flag(key, Role._meta.get_field(key).default) for key in _SSH_FLAGS},
    }
    return _RoleSpec(entry, name, fields, entry.names("requestable_by"), entry.names("reviewers"))


def _parse_resource(index: int, raw: object) -> _ResourceSpec:
    name = None
    if isinstance(raw, dict) and _one_line(raw.get("name")):
        name = f"{raw.get('kind')}/{raw['name']}" if _one_line(raw.get("kind")) else raw["name"]
    entry = _Entry("resources", index, raw, name)
    kind = entry.text("kind", max_length=32, required=True)
    if kind not in Resource.Kind.values:
        entry.fail("kind", f"{kind!r} is not one of {', '.join(Resource.Kind.values)}")
    name = entry.text("name", max_length=253, required=True)
    entry.check_keys(RESOURCE_KEYS)
    try:
        labels = validate_labels(entry.raw.get("labels"))
    except DomainError as exc:
        entry.fail("labels", exc.message)
    return _ResourceSpec(
        entry,
        kind,
        name,
        entry.text("address", max_length=255),
        labels,
        entry.text("description", max_length=10_000),
    )


def _no_duplicates(specs: list, key, section: str) -> None:
    first: dict[Any, int] = {}
    for i, spec in enumerate(specs):
        k = key(spec)
        if k in first:
            raise DomainError(
                f"{spec.entry.label}: listed twice (also {section}[{first[k]}])", field=f"{spec.entry.path}"
            )
        first[k] = i


def _parse(data: object) -> _Plan:
    if not isinstance(data, dict):
        raise DomainError(f"the policy must be a mapping with the keys {', '.join(SECTIONS)}")
    for key in data:
        if key not in SECTIONS:
            hint = difflib.get_close_matches(str(key), SECTIONS, n=1)
            suggestion = f" (did you mean {hint[0]}?)" if hint else f" (allowed: {', '.join(SECTIONS)})"
            raise DomainError(f"{key}: unknown section{suggestion}", field=str(key))
    plan = _Plan(
        # A bare "users:" (null) is an unfinished file, not "no users": only a list counts for prune.
        sections={key for key in SECTIONS if data.get(key) is not None},
        groups=_parse_groups(_section(data, "groups")),
        users=[_parse_user(i, raw) for i, raw in enumerate(_section(data, "users"))],
        roles=[_parse_role(i, raw) for i, raw in enumerate(_section(data, "roles"))],
        resources=[_parse_resource(i, raw) for i, raw in enumerate(_section(data, "resources"))],
    )
    _no_duplicates(plan.users, lambda s: s.username, "users")
    _no_duplicates(plan.roles, lambda s: s.name, "roles")
    _no_duplicates(plan.resources, lambda s: (s.kind, s.name), "resources")
    return plan


def _check_group_refs(plan: _Plan, *, prune: bool) -> None:
    """Every group a user or role names must be in the file or already exist.

    With prune and a ``groups`` section, groups not in the file are about to be
    deleted, so only the file's groups count.
    """
    known = set(plan.groups)
    pruning_groups = prune and "groups" in plan.sections
    referenced = {n for s in plan.users for n in s.groups} | {
        n for s in plan.roles for n in (*s.requestable_by, *s.reviewers)
    }
    existing = (
        set()
        if pruning_groups
        else set(Group.objects.filter(name__in=referenced - known).values_list("name", flat=True))
    )
    where = "in the file's groups" if pruning_groups else "in the file's groups or the database"
    for spec in plan.users:
        for name in spec.groups:
            if name not in known and name not in existing:
                spec.entry.fail("groups", f"group {name!r} is not {where}")
    for role in plan.roles:
        for key in ("requestable_by", "reviewers"):
            for name in getattr(role, key):
                if name not in known and name not in existing:
                    role.entry.fail(key, f"group {name!r} is not {where}")


def _history(
    model: type[models.Model], pks: list[int], *, owned: tuple[type[models.Model], ...] = ()
) -> dict[int, str]:
    """pk -> "3 access requests, 1 grant" for rows something else refers to.

    Walks every relation pointing at ``model`` (without importing the apps that
    hold them), so a role or resource that history mentions is never deleted
    from under it, whether the relation would PROTECT or silently CASCADE.
    """
    counts: dict[int, list[str]] = defaultdict(list)
    if not pks:
        return {}
    for rel in model._meta.related_objects:
        if rel.related_model in owned:
            continue
        name = rel.field.name
        rows = (
            rel.related_model._base_manager.filter(**{f"{name}__in": pks})
            .values(name)
            .annotate(n=Count("pk", distinct=True))
            .order_by()
        )
        meta = rel.related_model._meta
        for row in rows:
            noun = meta.verbose_name if row["n"] == 1 else meta.verbose_name_plural
            counts[row[name]].append(f"{row['n']} {noun}")
    return {pk: ", ".join(parts) for pk, parts in counts.items()}


@dataclass
class _Prune:
    users: list[User] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)


def _plan_prune(plan: _Plan) -> _Prune:
    out = _Prune()
    if "users" in plan.sections:
        # Superusers are never pruned: a file that forgot them must not lock everyone out.
        out.users = list(
            User.objects.filter(is_active=True, is_superuser=False).exclude(
                username__in=[s.username for s in plan.users]
            )
        )
    if "roles" in plan.sections:
        out.roles = list(Role.objects.exclude(name__in=[s.name for s in plan.roles]))
    if "resources" in plan.sections:
        named = {(s.kind, s.name) for s in plan.resources}
        out.resources = [r for r in Resource.objects.only("id", "kind", "name") if (r.kind, r.name) not in named]
    if "groups" in plan.sections:
        out.groups = list(Group.objects.exclude(name__in=plan.groups))

    blocked = []
    role_refs = _history(Role, [r.pk for r in out.roles])
    blocked += [f"role {r.name} ({role_refs[r.pk]})" for r in out.roles if r.pk in role_refs]
    resource_refs = _history(Resource, [r.pk for r in out.resources], owned=(ResourceLabel,))
    blocked += [f"resource {r.ref} ({resource_refs[r.pk]})" for r in out.resources if r.pk in resource_refs]
    if blocked:
        raise DomainError(
            "--prune would delete what history refers to: " + "; ".join(blocked) + ". Keep them in the file."
        )
    return out


# --- writing ------------------------------------------------------------------


class _Writer:
    def __init__(self, plan: _Plan):
        self.plan = plan
        self.changes: list[Change] = []
        self.groups: dict[str, Group] = {}
        self._review_permission: Permission | None = None

    def review_permission(self) -> Permission:
        if self._review_permission is None:
            app_label, codename = REVIEW_PERMISSION
            self._review_permission = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if self._review_permission is None:
                raise DomainError(f"the permission {app_label}.{codename} does not exist; run migrate first")
        return self._review_permission

    def record(self, action: str, kind: str, name: str, detail: list[str] | str = "") -> None:
        if isinstance(detail, list):
            detail = ", ".join(detail)
        self.changes.append(Change(action, kind, name, detail))

    def write_groups(self) -> None:
        wanted = set(self.plan.groups)
        for spec in self.plan.users:
            wanted.update(spec.groups)
        for spec in self.plan.roles:
            wanted.update(spec.requestable_by, spec.reviewers)
        self.groups = {g.name: g for g in Group.objects.filter(name__in=wanted)}
        for name in self.plan.groups:
            if name not in self.groups:
                self.groups[name] = Group.objects.create(name=name)
                self.record("created", "group", name)

    def write_users(self) -> None:
        names = [s.username for s in self.plan.users]
        users = User.objects.filter(username__in=names).prefetch_related("groups", "user_permissions__content_type")
        existing = {u.username: u for u in users}
        for spec in self.plan.users:
            user = existing.get(spec.username)
            if user is None:
                user = User(username=spec.username, **spec.fields)
                if spec.password is None:
                    user.set_unusable_password()
                else:
                    user.set_password(spec.password)
                user.save()
                if spec.groups:
                    user.groups.set([self.groups[n] for n in spec.groups])
                if spec.reviewer:
                    user.user_permissions.add(self.review_permission())
                self.record("created", "user", spec.username)
                continue
            changed = [key for key, attr in _USER_FIELDS.items() if getattr(user, attr) != spec.fields[attr]]
            for key in changed:
                setattr(user, _USER_FIELDS[key], spec.fields[_USER_FIELDS[key]])
            update_fields = [_USER_FIELDS[key] for key in changed]
            # The hasher's own check_password, not User.check_password: that one may
            # re-hash and save, and an unchanged apply must write nothing.
            if spec.password is not None and not check_password(spec.password, user.password):
                user.set_password(spec.password)
                changed.append("password")
                update_fields.append("password")
            if update_fields:
                user.save(update_fields=update_fields)
            if {g.name for g in user.groups.all()} != set(spec.groups):
                user.groups.set([self.groups[n] for n in spec.groups])
                changed.append("groups")
            # Only this one permission is the file's; others granted in the admin stay.
            app_label, codename = REVIEW_PERMISSION
            has_review = any(
                p.codename == codename and p.content_type.app_label == app_label for p in user.user_permissions.all()
            )
            if has_review != spec.reviewer:
                if spec.reviewer:
                    user.user_permissions.add(self.review_permission())
                else:
                    user.user_permissions.remove(self.review_permission())
                changed.append("reviewer")
            if changed:
                self.record("updated", "user", spec.username, changed)

    def write_roles(self) -> None:
        names = [s.name for s in self.plan.roles]
        existing = {
            r.name: r for r in Role.objects.filter(name__in=names).prefetch_related("requestable_by", "reviewers")
        }
        for spec in self.plan.roles:
            role = existing.get(spec.name)
            if role is None:
                role = Role.objects.create(name=spec.name, **spec.fields)
                role.requestable_by.set([self.groups[n] for n in spec.requestable_by])
                role.reviewers.set([self.groups[n] for n in spec.reviewers])
                self.record("created", "role", spec.name)
                continue
            changed = [key for key, value in spec.fields.items() if getattr(role, key) != value]
            for key in changed:
                setattr(role, key, spec.fields[key])
            for key in ("requestable_by", "reviewers"):
                wanted = getattr(spec, key)
                if {g.name for g in getattr(role, key).all()} != set(wanted):
                    getattr(role, key).set([self.groups[n] for n in wanted])
                    changed.append(key)
            if changed:
                # updated_at also moves when only the groups changed: the role did change.
                role.save(update_fields=[k for k in changed if k in spec.fields] + ["updated_at"])
                self.record("updated", "role", spec.name, changed)

    def write_resources(self) -> None:
        names = {s.name for s in self.plan.resources}
        existing = {(r.kind, r.name): r for r in Resource.objects.filter(name__in=names)}
        for spec in self.plan.resources:
            current = existing.get((spec.kind, spec.name))
            wanted = {"address": spec.address, "labels": spec.labels, "description": spec.description}
            if current is not None:
                changed = [key for key, value in wanted.items() if getattr(current, key) != value]
                if not changed:
                    continue
            try:
                resource_upsert(kind=spec.kind, name=spec.name, **wanted)
            except DomainError as exc:
                spec.entry.fail(exc.field or "name", exc.message)
            if current is None:
                self.record("created", "resource", spec.ref)
            else:
                self.record("updated", "resource", spec.ref, changed)

    def write_prune(self, prune: _Prune) -> None:
        if prune.users:
            User.objects.filter(pk__in=[u.pk for u in prune.users]).update(is_active=False)
            for user in prune.users:
                self.record("updated", "user", user.username, "deactivated: not in the file")
        if prune.roles:
            Role.objects.filter(pk__in=[r.pk for r in prune.roles]).delete()
            for role in prune.roles:
                self.record("deleted", "role", role.name)
        if prune.resources:
            Resource.objects.filter(pk__in=[r.pk for r in prune.resources]).delete()
            for resource in prune.resources:
                self.record("deleted", "resource", resource.ref)
        if prune.groups:
            Group.objects.filter(pk__in=[g.pk for g in prune.groups]).delete()
            for group in prune.groups:
                self.record("deleted", "group", group.name)


def policy_apply(*, data: dict, prune: bool = False, dry_run: bool = False) -> PolicyResult:
    """Make the objects ``data`` names match it; with ``prune``, remove the ones it does not name.

    Pruning deletes groups, roles and resources and deactivates users (history
    refers to users, so they are kept); superusers are never pruned, and a role
    or resource that requests or grants refer to stops the whole apply.
    Raises ``DomainError`` naming the entry and field at fault; nothing is
    written then, nor with ``dry_run``.
    """
    plan = _parse(data)
    try:
        with transaction.atomic():
            _check_group_refs(plan, prune=prune)
            to_prune = _plan_prune(plan) if prune else _Prune()
            writer = _Writer(plan)
            writer.write_groups()
            writer.write_users()
            writer.write_roles()
            writer.write_resources()
            writer.write_prune(to_prune)
            if dry_run:
                transaction.set_rollback(True)
    except IntegrityError as exc:
        # Only a concurrent writer gets here (everything was checked first); nothing was kept.
        detail = " ".join(str(exc).split())
        raise DomainError(f"the database changed while applying ({detail}); nothing was written, apply again") from None
    return PolicyResult(changes=writer.changes, dry_run=dry_run)
