"""Bulk writes of plain rows, for paths that insert thousands of rows and need no model instances back."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

from django.db import connection
from django.db.backends.utils import CursorDebugWrapper
from django.db.models.constants import OnConflict


def insert_rows(
    *, table: str, columns: Sequence[str], rows: Sequence[tuple], ignore_conflicts: bool = False, batch_size: int = 1000
) -> None:
    """Insert ``rows`` (values already in database form): COPY on PostgreSQL, else one multi-row INSERT per batch.

    ``bulk_create`` builds a model instance and prepares every value field by
    field; for a sweep's thousands of rows that costs more than the database's
    work. Batches stay under the backend's bind-parameter limit (999 on older
    SQLite builds). With ``ignore_conflicts`` a row that breaks a unique
    constraint is skipped, as ``bulk_create(ignore_conflicts=True)`` does
    (always by INSERT: COPY cannot skip a row).
    """
    if not rows:
        return
    ops = connection.ops
    table_sql = ops.quote_name(table)
    columns_sql = ", ".join(ops.quote_name(c) for c in columns)
    if connection.vendor == "postgresql" and not ignore_conflicts:
        _copy(f"COPY {table_sql} ({columns_sql}) FROM STDIN", rows)
        return
    width = len(columns)
    limit = connection.features.max_query_params
    size = max(1, min(batch_size, limit // width if limit else batch_size))
    on_conflict = OnConflict.IGNORE if ignore_conflicts else None
    head = f"{ops.insert_statement(on_conflict=on_conflict)} {table_sql} ({columns_sql}) VALUES "
    tail = ops.on_conflict_suffix_sql([], on_conflict, [], [])
    one = "(" + ", ".join(["%s"] * width) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            # Table and column names come from the caller's model, values are parameters.
            cursor.execute(
                head + ", ".join([one] * len(chunk)) + (f" {tail}" if tail else ""),
                [value for row in chunk for value in row],
            )


def _copy(sql: str, rows: Sequence[tuple]) -> None:
    # COPY streams the rows in one statement: about four times faster than
    # multi-row INSERTs, whose every value psycopg quotes into the SQL text.
    with connection.cursor() as cursor:
        # Through Django's debug wrapper when there is one, so query logs and counts see it as one statement.
        logged = cursor.debug_sql(sql) if isinstance(cursor, CursorDebugWrapper) else nullcontext()
        with logged, cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
