"""Reads of the inventory."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from inventory.models import Resource
from jitportal.errors import DomainError, NotFound

_MAX_ID = 2**63 - 1


def _parse_ref(ref: object, *, field: str) -> int | tuple[str, str]:
    """An id (an int) or a ``(kind, name)`` pair."""
    if isinstance(ref, bool):
        raise DomainError(f"{ref!r} is not a resource id or kind/name", field=field)
    if isinstance(ref, int):
        return ref
    if isinstance(ref, str):
        text = ref.strip()
        # ASCII only: str.isdigit() also accepts "²", which int() refuses.
        if text.isascii() and text.isdigit():
            return int(text)
        kind, sep, name = text.partition("/")
        # No stored name holds a NUL, and PostgreSQL refuses one in a query: not a name.
        if sep and kind and name and "\x00" not in text:
            return kind, name
    raise DomainError(f"{ref!r} is not a resource id or kind/name", field=field)


def resources_resolve(refs: list, *, field: str = "resources", queryset: QuerySet | None = None) -> list[Resource]:
    """Resources named by id or ``kind/name``, in the order given, in one query.

    Any that does not exist is a DomainError naming it. Given ``queryset``
    (what the caller may see), one outside it is answered exactly like one
    that does not exist, so the answer never tells which.
    """
    parsed = [_parse_ref(ref, field=field) for ref in refs]
    # An id beyond the database's integer range cannot exist (and would crash the query).
    ids = [value for value in parsed if isinstance(value, int) and 0 < value <= _MAX_ID]
    pairs = [value for value in parsed if isinstance(value, tuple)]
    q = Q(pk__in=ids)
    for kind, name in pairs:
        q |= Q(kind=kind, name=name)
    within = Resource.objects.all() if queryset is None else queryset
    found = list(within.filter(q)) if parsed else []
    by_id = {r.pk: r for r in found}
    by_ref = {(r.kind, r.name): r for r in found}
    resolved, missing = [], []
    for ref, value in zip(refs, parsed, strict=True):
        resource = by_id.get(value) if isinstance(value, int) else by_ref.get(value)
        if resource is None:
            missing.append(str(ref))
        else:
            resolved.append(resource)
    if missing:
        raise DomainError(f"no such resource: {', '.join(missing)}", field=field)
    return resolved


def resource_lookup(ref: object, *, field: str = "resource") -> dict[str, object] | None:
    """The field lookup that finds the resource ``ref`` (an id or ``kind/name``) names, without a query.

    A malformed reference is a DomainError naming ``field``; an id beyond the
    database's integer range, which no resource can have, is None.
    """
    value = _parse_ref(ref, field=field)
    if isinstance(value, int):
        return {"pk": value} if 0 < value <= _MAX_ID else None
    return {"kind": value[0], "name": value[1]}


def resource_get(ref: object, *, field: str = "resource") -> Resource:
    """One resource by id or ``kind/name``; NotFound when it does not exist."""
    lookup = resource_lookup(ref, field=field)
    resource = Resource.objects.filter(**lookup).first() if lookup is not None else None
    if resource is None:
        raise NotFound(f"no such resource: {ref}")
    return resource
