"""Reading a policy document: YAML, then every entry checked before anything is written."""

from __future__ import annotations

import difflib
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import yaml
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from yaml._yaml import CParser
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode
from yaml.resolver import BaseResolver, Resolver

from accounts.capabilities import Capability
from accounts.models import MAX_ROLE_DURATION, Role, User
from accounts.services import role_clean_kinds, role_clean_logins, role_clean_reason_pattern, role_clean_selector
from inventory.services import MAX_RESOURCE_NAME, resource_clean_kind, resource_clean_name, validate_labels
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
    "capabilities",
    "first_name",
    "last_name",
)
GROUP_KEYS = ("name", "capabilities")
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
    "reason_pattern",
    "max_extensions",
    "auto_approve",
    "break_glass",
    "pending_ttl",
    "ssh_permit_pty",
    "ssh_permit_port_forwarding",
    "ssh_permit_agent_forwarding",
    "review_requires_mfa",
)
RESOURCE_KEYS = ("kind", "name", "address", "labels", "description")
_SSH_FLAGS = ("ssh_permit_pty", "ssh_permit_port_forwarding", "ssh_permit_agent_forwarding")
# PositiveSmallIntegerField holds up to this on every database.
MAX_THRESHOLD = 32767


# --- loading ------------------------------------------------------------------


class _PolicyLoader(Composer, CParser, SafeConstructor, Resolver):
    """libyaml's parser, read one section entry at a time, refusing a key given twice in one mapping.

    Plain YAML keeps the last value silently, so a repeated ``approvals:`` or a
    second ``roles:`` section would quietly drop what came first. The events
    come from libyaml (C); the node tree is built per entry of a top-level
    list and dropped once the entry is constructed, so a large inventory never
    holds the whole document's nodes (with their marks) at once.
    """

    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)

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
                _duplicate_key(node.start_mark, key, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_one(self) -> Any:
        return self.construct_document(self.compose_node(None, None))

    def construct_entry(self) -> Any:
        """One entry of a top-level list, built straight from libyaml's events when it is plain YAML.

        Plain means no tag, anchor, alias or merge key: then a mapping, list or
        text needs no node tree, and only a scalar that may be something else
        than text (a number, a boolean, null, a date) goes through the
        constructor. Anything else is composed and constructed as usual from
        the same events, so both paths read it alike (duplicate keys included).
        """
        get = self.get_event
        first = get()
        events = [first]
        append = events.append
        kind = type(first)
        plain = kind in _NODE_EVENTS and first.anchor is None and first.tag is None
        depth = 1 if kind in _START_EVENTS else 0
        while depth:
            event = get()
            append(event)
            kind = type(event)
            if kind in _END_EVENTS:
                depth -= 1
                continue
            if kind in _START_EVENTS:
                depth += 1
            if kind not in _NODE_EVENTS or event.anchor is not None or event.tag is not None:
                plain = False  # an alias, an anchor or a tag
        if plain:
            try:
                return self._build(events, 0)[0]
            except _NotPlain:
                pass
        return self._replay(events)

    def _build(self, events: list, i: int) -> tuple[Any, int]:
        event = events[i]
        kind = type(event)
        if kind is ScalarEvent:
            return self._scalar(event), i + 1
        if kind is MappingStartEvent:
            mapping: dict = {}
            i += 1
            while type(events[i]) is not MappingEndEvent:
                key_event = events[i]
                if type(key_event) is not ScalarEvent:
                    raise _NotPlain  # a list or mapping as a key: the constructor reports it
                key = self._scalar(key_event, key=True)
                value, i = self._build(events, i + 1)
                if key in mapping:
                    _duplicate_key(event.start_mark, key, key_event.start_mark)
                mapping[key] = value
            return mapping, i + 1
        if kind is SequenceStartEvent:
            items = []
            i += 1
            while type(events[i]) is not SequenceEndEvent:
                item, i = self._build(events, i)
                items.append(item)
            return items, i + 1
        raise _NotPlain

    def _scalar(self, event: ScalarEvent, *, key: bool = False) -> Any:
        value = event.value
        if not event.implicit[0]:  # quoted, literal or folded: text, as the resolver decides
            return value
        if value and value[0] not in self._implicit_first:
            return value
        tag = self.resolve(ScalarNode, value, (True, False))
        if tag == _STR:
            return value
        if tag == _MERGE:
            raise _NotPlain
        return self.construct_object(ScalarNode(tag, value, event.start_mark, event.end_mark))

    def _replay(self, events: list) -> Any:
        # The composer reads events through these three; for one entry they read the list instead.
        queue = deque(events)
        self.get_event = queue.popleft  # type: ignore[method-assign]
        self.peek_event = lambda: queue[0]  # type: ignore[method-assign]
        self.check_event = lambda *choices: bool(queue) and (not choices or isinstance(queue[0], choices))  # type: ignore[method-assign]
        try:
            return self.construct_one()
        finally:
            del self.get_event, self.peek_event, self.check_event

    def load_document(self) -> Any:
        """The single document of the stream, top-level lists read entry by entry."""
        self.get_event()  # stream start
        if self.check_event(StreamEndEvent):
            return None
        document = self.get_event()
        data = self._top_mapping() if self._plain(MappingStartEvent) else self.construct_one()
        self.get_event()  # document end
        if not self.check_event(StreamEndEvent):
            raise ComposerError(
                "expected a single document in the stream",
                document.start_mark,
                "but found another document",
                self.get_event().start_mark,
            )
        return data

    def _plain(self, kind: type) -> bool:
        # A tagged or anchored collection goes through the composer whole, so tags and aliases mean what they say.
        event = self.peek_event()
        return isinstance(event, kind) and event.tag is None and event.anchor is None

    def _top_mapping(self) -> dict:
        start = self.get_event()
        data: dict = {}
        while not self.check_event(MappingEndEvent):
            key_mark = self.peek_event().start_mark
            key = self.construct_one()
            try:
                duplicate = key in data
            except TypeError:
                raise ConstructorError(
                    "while constructing a mapping", start.start_mark, "found unhashable key", key_mark
                ) from None
            if duplicate:
                _duplicate_key(start.start_mark, key, key_mark)
            if self._plain(SequenceStartEvent):
                self.get_event()
                items = []
                while not self.check_event(SequenceEndEvent):
                    items.append(self.construct_entry())
                self.get_event()
                data[key] = items
            else:
                data[key] = self.construct_one()
        self.get_event()
        return data


class _NotPlain(Exception):
    """An entry the event path leaves to the composer."""


_START_EVENTS = frozenset({MappingStartEvent, SequenceStartEvent})
_END_EVENTS = frozenset({MappingEndEvent, SequenceEndEvent})
_NODE_EVENTS = frozenset({MappingStartEvent, SequenceStartEvent, ScalarEvent})
_STR = BaseResolver.DEFAULT_SCALAR_TAG
_MERGE = "tag:yaml.org,2002:merge"
# First characters of a plain scalar that some implicit resolver (int, bool, null, ...) may claim.
_PolicyLoader._implicit_first = frozenset(k for k in Resolver.yaml_implicit_resolvers if k)


def _duplicate_key(mapping_mark, key: object, key_mark) -> NoReturn:
    raise ConstructorError("while constructing a mapping", mapping_mark, f"found duplicate key {key!r}", key_mark)


def policy_load(text: str) -> dict:
    """Parse a policy document; YAML mistakes become one readable DomainError."""
    try:
        loader = _PolicyLoader(text)
        try:
            data = loader.load_document()
        finally:
            loader.dispose()
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

    def capabilities(self, key: str = "capabilities") -> list[str]:
        """Capability names, each one of ``Capability``; an unknown one fails naming it."""
        names = self.names(key, max_length=64)
        for name in names:
            if name not in Capability.values:
                hint = difflib.get_close_matches(name, Capability.values, n=1)
                suggestion = f" (did you mean {hint[0]}?)" if hint else f" (known: {', '.join(Capability.values)})"
                self.fail(key, f"unknown capability {name!r}{suggestion}")
        return names

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

    def count(self, key: str, *, default: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THRESHOLD:
            self.fail(key, f"must be a whole number from 0 to {MAX_THRESHOLD}, not {value!r}")
        return value

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
    capabilities: list[str]


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
class Plan:
    sections: set[str]
    groups: list[str]
    # Every group of the ``groups`` section -> its capabilities (a plain name: none).
    group_capabilities: dict[str, list[str]]
    users: list[_UserSpec]
    roles: list[_RoleSpec]
    resources: list[_ResourceSpec]


# File key -> User field; the order is the order changes are reported in.
USER_FIELDS = {
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


def _parse_groups(items: list) -> dict[str, list[str]]:
    """Group name -> capabilities; an entry is a name or ``{name: security, capabilities: [audit]}``."""
    seen: dict[str, int] = {}
    capabilities: dict[str, list[str]] = {}
    for i, item in enumerate(items):
        name, held = item, []
        if isinstance(item, dict):
            entry = _Entry("groups", i, item, _one_line(item.get("name")))
            name = entry.text("name", max_length=150, required=True)
            entry.check_keys(GROUP_KEYS)
            held = entry.capabilities()
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise DomainError(f"groups[{i}]: {name!r} is not a group name", field=f"groups[{i}]")
        if len(name) > 150:
            raise DomainError(f"groups[{i}]: is longer than 150 characters", field=f"groups[{i}]")
        if name in seen:
            raise DomainError(f"groups[{i}] ({name}): listed twice (also groups[{seen[name]}])", field=f"groups[{i}]")
        seen[name] = i
        capabilities[name] = held
    return capabilities


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
    # Accepted for old files and checked, but it gives nothing: the roles' reviewer
    # groups decide who reviews, and no staff flag is needed for the queue.
    entry.flag("reviewer", False)
    return _UserSpec(entry, username, password, entry.names("groups"), fields, entry.capabilities())


def _shared_rule(entry: _Entry, rule, value):
    """Run one of the rules that the admin and the services apply too, naming this entry on failure."""
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
        "reason_pattern": _shared_rule(entry, role_clean_reason_pattern, entry.text("reason_pattern", max_length=500)),
        "max_extensions": entry.count("max_extensions", default=1),
        "auto_approve": entry.flag("auto_approve", False),
        "break_glass": entry.flag("break_glass", False),
        "pending_ttl": entry.duration("pending_ttl", timedelta(hours=24)),
        "review_requires_mfa": entry.flag("review_requires_mfa", False),
        # Extensions of the SSH certificates signed for this role's grants.
        **{key: entry.flag(key, Role._meta.get_field(key).default) for key in _SSH_FLAGS},
    }
    return _RoleSpec(entry, name, fields, entry.names("requestable_by"), entry.names("reviewers"))


def _parse_resource(index: int, raw: object) -> _ResourceSpec:
    name = None
    if isinstance(raw, dict) and _one_line(raw.get("name")):
        name = f"{raw.get('kind')}/{raw['name']}" if _one_line(raw.get("kind")) else raw["name"]
    entry = _Entry("resources", index, raw, name)
    kind = _shared_rule(entry, resource_clean_kind, entry.text("kind", max_length=32, required=True))
    name = _shared_rule(entry, resource_clean_name, entry.text("name", max_length=MAX_RESOURCE_NAME, required=True))
    entry.check_keys(RESOURCE_KEYS)
    labels = _shared_rule(entry, validate_labels, entry.raw.get("labels"))
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


def parse_document(data: object) -> Plan:
    if not isinstance(data, dict):
        raise DomainError(f"the policy must be a mapping with the keys {', '.join(SECTIONS)}")
    for key in data:
        if key not in SECTIONS:
            hint = difflib.get_close_matches(str(key), SECTIONS, n=1)
            suggestion = f" (did you mean {hint[0]}?)" if hint else f" (allowed: {', '.join(SECTIONS)})"
            raise DomainError(f"{key}: unknown section{suggestion}", field=str(key))
    groups = _parse_groups(_section(data, "groups"))
    plan = Plan(
        # A bare "users:" (null) is an unfinished file, not "no users": only a list counts for prune.
        sections={key for key in SECTIONS if data.get(key) is not None},
        groups=list(groups),
        group_capabilities=groups,
        users=[_parse_user(i, raw) for i, raw in enumerate(_section(data, "users"))],
        roles=[_parse_role(i, raw) for i, raw in enumerate(_section(data, "roles"))],
        resources=[_parse_resource(i, raw) for i, raw in enumerate(_section(data, "resources"))],
    )
    _no_duplicates(plan.users, lambda s: s.username, "users")
    _no_duplicates(plan.roles, lambda s: s.name, "roles")
    _no_duplicates(plan.resources, lambda s: (s.kind, s.name), "resources")
    return plan


def check_group_refs(plan: Plan, *, prune: bool) -> None:
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
