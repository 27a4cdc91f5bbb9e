"""Statement: a queryset compiled once per connection gives the rows the queryset itself gives."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db import IntegrityError, connection
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from inventory.models import Resource
from jitportal.statements import Statement, execute_prepared
from tests.conftest import make_resource

pytestmark = pytest.mark.django_db


def _build(kind, after, name):
    # JSON, a datetime, a boolean and a scalar subquery: every converter the rows need.
    same_kind = Resource.objects.filter(kind=kind)
    return (
        same_kind.filter(updated_at__gte=after)
        .annotate(
            named=Exists(Resource.objects.filter(pk=OuterRef("pk"), name=name)),
            first_of_kind=Subquery(same_kind.order_by("name").values("name")[:1]),
        )
        .order_by("name")
        .values("id", "name", "labels", "updated_at", "named", "first_of_kind")
    )


@pytest.fixture
def inventory(db):
    make_resource("web-1", labels={"env": "prod", "team": "web"})
    make_resource("web-2", labels={"env": "dev"})
    make_resource("db-1", kind="db", labels={"env": "prod"})


def test_rows_are_what_the_queryset_gives_for_each_set_of_values(inventory):
    statement = Statement(_build, kind=str, after=datetime, name=str)
    long_ago = timezone.now() - timedelta(days=1)
    for kind, after, name in [
        ("node", long_ago, "web-2"),
        ("db", long_ago, "db-1"),
        ("node", long_ago, "nothing"),
        ("node", timezone.now() + timedelta(days=1), "web-1"),
    ]:
        assert statement.rows(kind=kind, after=after, name=name) == list(_build(kind, after, name))


def test_values_come_back_converted(inventory):
    statement = Statement(_build, kind=str, after=datetime, name=str)
    first, second = statement.rows(kind="node", after=timezone.now() - timedelta(days=1), name="web-2")
    assert first["labels"] == {"env": "prod", "team": "web"}
    assert isinstance(first["updated_at"], datetime) and timezone.is_aware(first["updated_at"])
    assert (first["named"], second["named"]) == (False, True)
    assert first["first_of_kind"] == second["first_of_kind"] == "web-1"


def test_the_queryset_is_built_once_and_each_call_is_one_query(inventory, django_assert_num_queries):
    built = []

    def build(kind, after, name):
        built.append(kind)
        return _build(kind, after, name)

    statement = Statement(build, kind=str, after=datetime, name=str)
    long_ago = timezone.now() - timedelta(days=1)
    for kind in ("node", "db", "node"):
        with django_assert_num_queries(1):
            statement.rows(kind=kind, after=long_ago, name="web-1")
    assert len(built) == 1


def test_a_value_the_compiler_folds_into_the_sql_is_refused():
    # A slice's bound is written into the SQL text, not passed as a parameter: it cannot be rebound.
    statement = Statement(lambda limit: Resource.objects.values("id")[:limit], limit=int)
    with pytest.raises(ValueError, match="limit"):
        statement.rows(limit=5)


def test_every_value_is_required_and_no_other():
    statement = Statement(_build, kind=str, after=datetime, name=str)
    with pytest.raises(TypeError):
        statement.rows(kind="node", after=timezone.now())
    with pytest.raises(TypeError):
        statement.rows(kind="node", after=timezone.now(), name="web-1", extra=1)


def _prepared_statements() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
@pytest.mark.parametrize("prepared", [True, False])
def test_on_postgresql_a_statement_is_prepared_once_per_connection_unless_turned_off(inventory, prepared, settings):
    settings.JITPORTAL_DB_PREPARED_STATEMENTS = prepared
    statement = Statement(_build, kind=str, after=datetime, name=str)
    since = timezone.now() - timedelta(days=1)
    before = _prepared_statements()

    first = statement.rows(kind="node", after=since, name="web-1")
    again = statement.rows(kind="node", after=since, name="web-2")

    # The same rows either way, with fresh values bound on each call.
    assert [(r["name"], r["named"]) for r in first] == [("web-1", True), ("web-2", False)]
    assert [(r["name"], r["named"]) for r in again] == [("web-1", False), ("web-2", True)]
    after = _prepared_statements()
    ours = [sql for sql in after if '"inventory_resource"' in sql and "$1" in sql]
    if prepared:
        assert len(ours) == 1, ours
    else:
        assert after == before


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
def test_a_database_error_in_a_prepared_statement_is_djangos(db):
    with connection.cursor() as cursor, pytest.raises(IntegrityError):
        execute_prepared(cursor, "INSERT INTO inventory_resource (id) VALUES (%s)", [None])
