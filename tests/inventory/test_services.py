"""Inventory rules: a resource's kind, name and labels are checked once, the same for every caller."""

from __future__ import annotations

import math

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.policy.parse import parse_document
from accounts.services import role_clean_selector
from inventory.models import Resource, ResourceLabel, resource_content_hash
from inventory.services import UPSERT_CHUNK, ResourceRow, resource_upsert, resources_upsert_many, validate_labels
from jitportal.errors import DomainError

pytestmark = pytest.mark.django_db


def refusal(call) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    ("kind", "name", "field"),
    [("server", "web-1", "kind"), ("node", "   ", "name"), ("node", "x" * 254, "name")],
)
def test_the_policy_file_and_the_service_refuse_a_resource_in_the_same_words(kind, name, field):
    by_service = refusal(lambda: resource_upsert(kind=kind, name=name))
    by_policy = refusal(lambda: parse_document({"resources": [{"kind": kind, "name": name}]}))

    assert by_service.field == field
    assert by_policy.message.endswith(f".{field}: {by_service.message}")


def test_resource_labels_and_role_selectors_share_the_label_key_rule():
    resource = refusal(lambda: validate_labels({"-bad": "x"}))
    selector = refusal(lambda: role_clean_selector({"-bad": ["x"]}))

    assert resource.message == selector.message == "label key '-bad' is not valid (letters, digits, '.', '_', '-', '/')"
    assert role_clean_selector({"tier": [1, "2"]}) == {"tier": ["1", "2"]}
    assert validate_labels({"tier": 1}) == {"tier": "1"}
    assert "is not a label value" in refusal(lambda: role_clean_selector({"tier": [True]})).message


# --- many resources at once ---------------------------------------------------------------------


def rows(n: int, *, env: str = "prod", note: str = "") -> list[ResourceRow]:
    """``n`` node rows web-0, web-1, ... with two labels each."""
    return [ResourceRow("node", f"web-{i}", f"10.0.0.{i}:22", {"env": env, "n": str(i)}, note) for i in range(n)]


def stored_labels() -> list[tuple[str, str, str]]:
    return sorted(ResourceLabel.objects.values_list("resource__name", "key", "value"))


def test_many_resources_are_created_with_their_label_rows_across_chunks():
    answers = resources_upsert_many(rows=rows(5), chunk_size=2)

    assert answers == [None] * 5
    assert sorted(Resource.objects.values_list("name", "address")) == [(f"web-{i}", f"10.0.0.{i}:22") for i in range(5)]
    assert stored_labels() == sorted((f"web-{i}", k, v) for i in range(5) for k, v in (("env", "prod"), ("n", str(i))))
    assert Resource.objects.with_label("env", "prod").count() == 5


def test_an_unchanged_row_is_not_written_and_a_changed_one_names_its_fields():
    resources_upsert_many(rows=rows(4))
    before = dict(Resource.objects.values_list("name", "updated_at"))
    label_ids = dict(ResourceLabel.objects.filter(resource__name="web-0").values_list("key", "pk"))
    wanted = rows(4)
    wanted[1] = ResourceRow("node", "web-1", "10.0.0.1:22", {"env": "dev", "n": "1"}, "")
    wanted[2] = ResourceRow("node", "web-2", "10.9.9.9:22", {"env": "prod", "n": "2"}, "moved")

    answers = resources_upsert_many(rows=[*wanted, ResourceRow("db", "web-0", "", {}, "")], chunk_size=3)

    # (db, web-0) shares a name with node/web-0 but is another resource.
    assert answers == [[], ["labels"], ["address", "description"], [], None]
    after = dict(Resource.objects.filter(kind="node").values_list("name", "updated_at"))
    assert after["web-0"] == before["web-0"] and after["web-3"] == before["web-3"]
    assert after["web-1"] > before["web-1"] and after["web-2"] > before["web-2"]
    assert Resource.objects.get(name="web-2").address == "10.9.9.9:22"
    assert list(Resource.objects.with_label("env", "dev").values_list("name", flat=True)) == ["web-1"]
    # Label rows of rows whose labels did not change are the same rows.
    assert dict(ResourceLabel.objects.filter(resource__name="web-0").values_list("key", "pk")) == label_ids
    assert Resource.objects.get(name="web-1").labels == {"env": "dev", "n": "1"}


def test_a_second_write_of_the_same_rows_only_reads(django_assert_num_queries):
    resources_upsert_many(rows=rows(6))

    # One read of every stored key and content hash, whatever the chunks (plus the transaction's savepoint pair).
    with django_assert_num_queries(1 + 2):
        assert resources_upsert_many(rows=rows(6), chunk_size=2) == [[]] * 6


def test_one_chunk_costs_the_same_queries_for_ten_rows_as_for_a_full_chunk():
    def queries(batch: list[ResourceRow]) -> int:
        with CaptureQueriesContext(connection) as ctx:
            resources_upsert_many(rows=batch, chunk_size=UPSERT_CHUNK)
        return len(ctx.captured_queries)

    def renamed(batch: list[ResourceRow], prefix: str) -> list[ResourceRow]:
        return [ResourceRow(r.kind, prefix + r.name, r.address, r.labels, r.description) for r in batch]

    def statements(fields: list, n: int) -> int:
        # bulk_update splits by the database's limit on parameters; nothing else may grow with the rows.
        return math.ceil(n / connection.ops.bulk_batch_size(fields, [None] * n))

    assert queries(renamed(rows(UPSERT_CHUNK), "b-")) == queries(renamed(rows(10), "a-"))
    pk, labels, digest, updated_at = (
        Resource._meta.get_field(name) for name in ("id", "labels", "content_hash", "updated_at")
    )
    updates = statements([pk, pk, labels, digest, updated_at], UPSERT_CHUNK) - 1
    assert (
        queries(renamed(rows(UPSERT_CHUNK, env="dev"), "b-")) == queries(renamed(rows(10, env="dev"), "a-")) + updates
    )
    assert Resource.objects.with_label("env", "dev").count() == UPSERT_CHUNK + 10


def test_many_resources_refuse_an_unclean_row_naming_the_field():
    error = refusal(lambda: resources_upsert_many(rows=[ResourceRow("server", "web-1", "", {}, "")]))

    assert error.field == "kind"
    assert not Resource.objects.exists()


def test_the_content_hash_follows_every_content_field_and_not_the_order_of_labels():
    base = {"address": "10.0.0.1:22", "labels": {"env": "prod", "team": "web"}, "description": "web"}
    digest = resource_content_hash(**base)

    assert resource_content_hash(**{**base, "labels": {"team": "web", "env": "prod"}}) == digest
    others = [
        {**base, "address": "10.0.0.2:22"},
        {**base, "labels": {"env": "prod"}},
        {**base, "labels": {"env": "prod", "team": "web2"}},
        {**base, "description": "web "},
        # Moving text from one field to the next is a different resource, not the same bytes.
        {**base, "address": "10.0.0.1:22web", "description": ""},
    ]
    assert len({resource_content_hash(**other) for other in others} | {digest}) == len(others) + 1


def test_every_write_of_a_resource_stores_the_hash_of_what_it_wrote():
    resource, _ = resource_upsert(kind="node", name="web-1", address="10.0.0.1:22", labels={"env": "prod"})
    resources_upsert_many(rows=[ResourceRow("node", "web-2", "", {"env": "dev"}, "two")])
    resource.description = "edited"
    resource.save(update_fields=["description"])

    for stored in Resource.objects.all():
        expected = resource_content_hash(address=stored.address, labels=stored.labels, description=stored.description)
        assert stored.content_hash == expected
