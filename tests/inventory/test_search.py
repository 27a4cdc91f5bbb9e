"""Text search: the index each database answers from, and that it follows every write."""

from __future__ import annotations

import pytest
from django.db import connection

from inventory.models import Resource, text_q
from inventory.services import resource_upsert
from tests.conftest import make_resource

pytestmark = pytest.mark.django_db


def found(text: str) -> list[str]:
    return sorted(Resource.objects.filter(text_q(text)).values_list("name", flat=True))


def test_search_follows_creates_updates_and_deletes():
    web = make_resource("web-00012", address="10.0.0.12:22", description="Frontend in eu-west")
    make_resource("api-00012", description="backend")

    assert found("web-000") == ["web-00012"]
    assert found("00012") == ["api-00012", "web-00012"]
    assert found("FRONTEND IN") == ["web-00012"]

    resource_upsert(kind="node", name="web-00012", address="10.9.9.9:22", description="moved to us-east")
    assert found("frontend") == []
    assert found("us-east") == ["web-00012"]
    assert found("10.9.9") == ["web-00012"]

    web.delete()
    assert found("us-east") == []
    assert found("00012") == ["api-00012"]


def test_short_text_and_text_with_quotes_or_wildcards_are_found_literally():
    make_resource("a1", description='the "blue" 50%_off box')
    make_resource("b2", description="the blue box")

    assert found("a1") == ["a1"]
    assert found('"blue"') == ["a1"]
    assert found("50%_") == ["a1"]
    assert found("%") == ["a1"]
    assert found("blue") == ["a1", "b2"]


def test_non_ascii_text_is_found_as_written():
    make_resource("ärzte-1", description="Zürich Praxis")

    assert found("ärzte") == ["ärzte-1"]
    assert found("Zürich") == ["ärzte-1"]


def _plan(text: str) -> str:
    sql, params = Resource.objects.filter(text_q(text)).order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # On a handful of rows a sequential scan is cheaper; forbid it to see that the index can answer.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}", params)
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(row) for row in cursor.fetchall())


def test_text_search_is_answered_from_an_index():
    make_resource("web-00012")

    plan = _plan("web-00012")

    if connection.vendor == "postgresql":
        assert "resource_search_trgm" in plan, plan
    else:
        assert "inventory_resource_fts VIRTUAL TABLE" in plan, plan
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'inventory_resource'")
            triggers = {row[0] for row in cursor.fetchall()}
        # A migration that rebuilds the table on SQLite drops them; it must make them again.
        assert triggers == {
            "inventory_resource_fts_insert",
            "inventory_resource_fts_update",
            "inventory_resource_fts_delete",
        }


def test_labels_beside_a_long_enough_text_are_tested_row_by_row_on_postgresql():
    """With the trigram index narrowing, a common label read from its GIN index is a third of the inventory."""
    from django.http import QueryDict

    from inventory.filters import ResourceFilterSet

    def sql(query: str) -> str:
        return str(ResourceFilterSet(QueryDict(query), queryset=Resource.objects.all()).qs.query)

    with_text, short_text = sql("label=env=prod&label=team&search=web-01"), sql("label=env=prod&search=we")

    if connection.vendor == "postgresql":
        assert "@>" not in with_text and " ? " not in with_text, with_text
        assert "->>" in with_text and "IS NOT NULL" in with_text, with_text
        assert "@>" in short_text, short_text
    else:
        # SQLite reads labels from their (key, value) rows either way.
        assert "inventory_resourcelabel" in with_text and "inventory_resourcelabel" in short_text
