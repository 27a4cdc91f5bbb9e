"""Pages of a resource search that cost the same at any depth, and counts that stop early.

A page is found by its position in the (kind, name) order, which the unique
(kind, name) index serves directly: ``WHERE (kind, name) > (last kind, last
name) ORDER BY kind, name LIMIT size + 1``. An OFFSET would read and throw
away every row before the page, so page 2000 would cost 2000 pages.

Counting every match of a broad search reads every match; a count stops at
``COUNT_CAP`` unless the caller asks for the exact figure.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from django.db import models
from django.db.models import F, Func, QuerySet, Value
from django.db.models.lookups import GreaterThan, LessThan

from jitportal.errors import DomainError

COUNT_CAP = 1000


class _Row(Func):
    """A row value, ``(a, b)``: compared as a whole, so one index range serves it."""

    function = ""
    template = "(%(expressions)s)"
    output_field = models.TextField()


@dataclass(frozen=True)
class Position:
    """Just after (or, going back, just before) the resource ``kind``/``name`` in the search order."""

    kind: str
    name: str
    backward: bool = False


def cursor_for(position: tuple[str, str], *, backward: bool = False) -> str:
    """The opaque cursor naming a position (URL-safe, no padding)."""
    raw = json.dumps([position[0], position[1], int(backward)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_parse(text: str, *, field: str = "cursor") -> Position:
    """The position a cursor names; anything else is a DomainError naming ``field``."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        kind, name, backward = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise DomainError("is not a cursor from a previous page's next or previous link", field=field) from None
    if not (isinstance(kind, str) and isinstance(name, str) and backward in (0, 1)) or "\x00" in kind + name:
        raise DomainError("is not a cursor from a previous page's next or previous link", field=field)
    return Position(kind, name, bool(backward))


def matches_capped(queryset: QuerySet, *, cap: int | None = None) -> tuple[int, bool, list[int]]:
    """(count, exact, ids): the rows' number and ids, or the cap (``COUNT_CAP``) and False when there are more.

    The capped count, read as ids: what finding the matches cost (a text
    search's index, the scope's probes) is then not paid again for the page
    when they are few (``few_first``). When there are more than ``cap``,
    ``exact`` is False and the ids are only the first ``cap + 1`` found.
    """
    cap = COUNT_CAP if cap is None else cap
    ids = list(queryset.order_by().values_list("pk", flat=True)[: cap + 1])
    return min(len(ids), cap), len(ids) <= cap, ids


def few_first(queryset: QuerySet, ids: list[int]) -> QuerySet:
    """The rows ``ids``, every match of ``queryset`` (``matches_capped`` found at most the cap), to sort.

    Their page is then the sort of those few by primary key. Given the whole
    search, the planner may instead walk the (kind, name) index and test every
    row on the way, reading hundreds of thousands of rows for a page of a few
    hundred matches whenever it overestimates how many there are. Like the
    count and the page before, the two reads are moments apart: a row that
    left the search in between may be listed, as one that joined it may be
    missed.
    """
    return queryset.model._default_manager.filter(pk__in=ids)


@dataclass
class KeysetPage:
    items: list = field(default_factory=list)
    next: tuple[str, str] | None = None
    previous: tuple[str, str] | None = None


def keyset_page(queryset: QuerySet, *, position: Position | None, size: int) -> KeysetPage:
    """The ``size`` resources after ``position`` (or before it, going back) in (kind, name) order.

    ``next``/``previous`` are the positions to continue from, None at either end.
    """
    here = _Row(F("kind"), F("name"))
    if position is None:
        rows = list(queryset.order_by("kind", "name")[: size + 1])
        return KeysetPage(rows[:size], _key(rows[size - 1]) if len(rows) > size else None, None)
    mark = _Row(Value(position.kind), Value(position.name))
    if position.backward:
        rows = list(queryset.filter(LessThan(here, mark)).order_by("-kind", "-name")[: size + 1])
        if not rows:
            # Nothing before it any more (rows went away): start again from the first page.
            return keyset_page(queryset, position=None, size=size)
        more_before = len(rows) > size
        rows = rows[:size][::-1]
        # The page came from one after it, so there is a next page.
        return KeysetPage(rows, _key(rows[-1]), _key(rows[0]) if more_before else None)
    rows = list(queryset.filter(GreaterThan(here, mark)).order_by("kind", "name")[: size + 1])
    more_after = len(rows) > size
    rows = rows[:size]
    # A cursor is the last row of an earlier page, so there is a previous page whenever this one has rows.
    return KeysetPage(rows, _key(rows[-1]) if more_after else None, _key(rows[0]) if rows else None)


def _key(resource) -> tuple[str, str]:
    if isinstance(resource, dict):  # a row read with .values()
        return resource["kind"], resource["name"]
    return resource.kind, resource.name
