"""Querysets compiled to SQL once per database connection, for the few reads on the hottest paths.

Building and compiling a queryset with subqueries costs Django several
milliseconds, far more than the database needs to run it; on the access check
it was most of the request. A :class:`Statement` builds its queryset once per
connection with placeholder values, notes where each placeholder lands among
the SQL parameters, and on every call binds fresh values and converts the
row values as the queryset would (JSON, datetimes, booleans). The queryset,
built from the models' own queryset methods, stays the one definition of
what is read; only its compilation is remembered.

A placeholder that the compiler does not pass through unchanged as a
parameter (folded into the SQL text, transformed by a lookup) fails at the
first call, never silently: such a statement cannot be cached this way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper
from django.db.models import QuerySet

# Kinds of values a placeholder may stand for.
Kind = type[int] | type[str] | type[datetime]


def _placeholder(kind: Kind, index: int) -> Any:
    # Values that stand out among the parameters and that the compiler accepts
    # (an integer within the range of the usual columns: Django folds an
    # out-of-range one away, which the check after compiling reports).
    if kind is int:
        return 1_000_003 + index
    if kind is str:
        return f"\x1fplaceholder-{index}\x1f"
    if kind is datetime:
        return datetime(1901, 2, 3, 4, 5, 6, 1000 + index, tzinfo=UTC)
    raise TypeError(f"no placeholder for {kind!r}")


@dataclass
class _Compiled:
    sql: str
    params: list[Any]
    slots: list[tuple[int, str]]  # (position among the parameters, placeholder name)
    names: list[str]
    compiler: Any
    converters: dict


class Statement:
    """``build(**values)`` returns a ``.values(...)`` queryset; :meth:`rows` runs it with fresh values.

    ``kinds`` names each argument of ``build`` and the kind of value it takes
    (``int``, ``str``, ``datetime``).
    """

    def __init__(self, build: Callable[..., QuerySet], **kinds: Kind):
        self._build = build
        self._kinds = kinds
        self._compiled: WeakKeyDictionary[BaseDatabaseWrapper, _Compiled] = WeakKeyDictionary()

    def _compile(self, connection: BaseDatabaseWrapper) -> _Compiled:
        placeholders = {name: _placeholder(kind, i) for i, (name, kind) in enumerate(self._kinds.items())}
        queryset = self._build(**placeholders)
        query = queryset.query
        compiler = query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        adapted = {name: self._adapt(name, value, connection) for name, value in placeholders.items()}
        slots = [(i, name) for i, param in enumerate(params) for name, value in adapted.items() if param == value]
        for name, value in placeholders.items():
            if not any(slot_name == name for _, slot_name in slots):
                raise ValueError(f"placeholder {name!r} is not a parameter of the compiled statement")
            if isinstance(value, str) and value in sql:
                raise ValueError(f"placeholder {name!r} was folded into the SQL text")
        # The order in which the compiler selects: extra, then the values' fields, then the annotations.
        names = [*query.extra_select, *query.values_select, *query.annotation_select]
        fields = [column[0] for column in compiler.select[: compiler.col_count]]
        compiled = _Compiled(
            sql=sql,
            params=list(params),
            slots=slots,
            names=names,
            compiler=compiler,
            converters=compiler.get_converters(fields),
        )
        self._compiled[connection] = compiled
        return compiled

    def _adapt(self, name: str, value: Any, connection: BaseDatabaseWrapper) -> Any:
        # As DateTimeField.get_db_prep_value does: SQLite stores text, PostgreSQL takes the datetime.
        if self._kinds[name] is datetime:
            return connection.ops.adapt_datetimefield_value(value)
        return value

    def rows(self, *, using: str = "default", **values: Any) -> list[dict[str, Any]]:
        """The rows for ``values`` (one per placeholder), each a dict keyed as the queryset's values."""
        if values.keys() != self._kinds.keys():
            raise TypeError(f"expected values for {sorted(self._kinds)}, got {sorted(values)}")
        connection = connections[using]
        compiled = self._compiled.get(connection) or self._compile(connection)
        params = list(compiled.params)
        for position, name in compiled.slots:
            params[position] = self._adapt(name, values[name], connection)
        with connection.cursor() as cursor:
            fetched = execute_prepared(cursor, compiled.sql, params)
        rows = compiled.compiler.apply_converters(fetched, compiled.converters) if compiled.converters else fetched
        return [dict(zip(compiled.names, row, strict=True)) for row in rows]


def execute_prepared(cursor: Any, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[tuple]:
    """Run ``sql`` on ``cursor``'s connection and return its rows; on PostgreSQL as a prepared statement.

    The portal binds parameters on the client (Django's default), so the
    server parses and plans every statement anew; for the few statements on
    the hottest paths planning costs more than running them. Here psycopg
    prepares the statement once per connection (a new connection prepares it
    again) and later calls only bind and execute. Parameters are then typed by
    the server, so ``sql`` casts any value whose type its context does not fix.
    ``JITPORTAL_DB_PREPARED_STATEMENTS=0`` turns this off, for a connection
    pooler in transaction mode that cannot keep prepared statements (PgBouncer
    before 1.21, or without ``max_prepared_statements``).
    Query logging and counting see it as the statement it is.
    """
    connection = cursor.db
    if connection.vendor != "postgresql" or not settings.JITPORTAL_DB_PREPARED_STATEMENTS:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []
    logged = cursor.debug_sql(sql, params) if isinstance(cursor, CursorDebugWrapper) else nullcontext()
    with logged, connection.wrap_database_errors, psycopg.Cursor(connection.connection) as prepared:
        prepared.execute(sql, params, prepare=True)
        return prepared.fetchall() if prepared.description else []
