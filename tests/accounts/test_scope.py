"""The role scopes (RoleResource rows) stay true through every write of a role's selector or a resource."""

from __future__ import annotations

import json
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Role, RoleResource
from accounts.policy import policy_apply, policy_load
from accounts.scope import role_scope_sync
from accounts.selectors import resources_searchable_by
from inventory.models import Resource
from inventory.services import resource_upsert
from tests.conftest import make_resource, make_role

pytestmark = pytest.mark.django_db

KINDS = ["node", "db", "app"]


def truth() -> set[tuple[int, int]]:
    """Which role matches which resource, by the selector rule itself."""
    roles, resources = list(Role.objects.all()), list(Resource.objects.all())
    return {(role.pk, r.pk) for role in roles for r in resources if role.matches(r)}


def rows() -> set[tuple[int, int]]:
    return set(RoleResource.objects.values_list("role_id", "resource_id"))


def test_rows_follow_resources_created_relabelled_and_deleted():
    prod = make_role("prod", resource_kinds=["node"], resource_labels={"env": ["prod"]})
    any_env = make_role("any-env", resource_kinds=["node", "db"], resource_labels={"env": ["*"]})
    web = make_resource("web", labels={"env": "prod"})
    assert rows() == {(prod.pk, web.pk), (any_env.pk, web.pk)}

    resource_upsert(kind="node", name="web", labels={"env": "dev"})
    assert rows() == {(any_env.pk, web.pk)}

    resource_upsert(kind="node", name="web", labels={})
    assert rows() == set()

    resource_upsert(kind="node", name="web", labels={"env": "prod"})
    web.delete()
    assert rows() == set()


def test_rows_follow_a_role_whose_selector_changes_and_go_with_it():
    web = make_resource("web", labels={"env": "prod"})
    dev = make_resource("dev", labels={"env": "dev"})
    role = make_role("r", resource_labels={"env": ["prod"]})
    assert rows() == {(role.pk, web.pk)}

    role.resource_labels = {"env": ["dev"]}
    role.save(update_fields=["resource_labels"])
    role_scope_sync(roles=[role])
    assert rows() == {(role.pk, dev.pk)}

    role.resource_kinds = []
    role.save(update_fields=["resource_kinds"])
    role_scope_sync(roles=[role])
    assert rows() == set()

    role.resource_kinds = ["node"]
    role.save(update_fields=["resource_kinds"])
    role_scope_sync(roles=[role])
    role.delete()
    assert rows() == set()


POLICY = """
groups: [engineers]
roles:
  - name: r
    resource_kinds: [node]
    resource_labels: {{env: [{env}]}}
    logins: [ubuntu]
    requestable_by: [engineers]
resources:
  - {{kind: node, name: web, labels: {{env: prod}}}}
  - {{kind: node, name: dev, labels: {{env: {dev_env}}}}}
"""


def test_apply_keeps_rows_true_as_roles_and_resources_change():
    policy_apply(data=policy_load(POLICY.format(env="prod", dev_env="dev")))
    assert rows() == truth() and len(rows()) == 1

    policy_apply(data=policy_load(POLICY.format(env="dev", dev_env="dev")))
    assert rows() == truth() == {(Role.objects.get().pk, Resource.objects.get(name="dev").pk)}

    policy_apply(data=policy_load(POLICY.format(env="dev", dev_env="prod")))
    assert rows() == truth() == set()


def test_random_writes_through_the_services_keep_rows_true():
    rng = random.Random(13)  # noqa: S311 -- a repeatable sequence of writes, not a secret
    for step in range(60):
        action = rng.choice(["resource", "resource", "role", "reselect"])
        if action == "resource":
            labels = {key: rng.choice(["a", "b"]) for key in ("env", "team") if rng.random() < 0.7}
            resource_upsert(kind=rng.choice(KINDS), name=f"r{rng.randrange(12)}", labels=labels)
        elif action == "role" or not Role.objects.exists():
            selector = {
                key: rng.choice([["a"], ["b"], ["*"], ["a", "b"]]) for key in ("env", "team") if rng.random() < 0.5
            }
            make_role(f"role{step}", resource_kinds=rng.sample(KINDS, rng.randrange(4)), resource_labels=selector)
        else:
            role = rng.choice(list(Role.objects.all()))
            role.resource_kinds = rng.sample(KINDS, rng.randrange(1, 4))
            role.resource_labels = {"env": [rng.choice(["a", "b", "*"])]} if rng.random() < 0.5 else {}
            role.save(update_fields=["resource_kinds", "resource_labels"])
            role_scope_sync(roles=[role])
        assert rows() == truth(), step


def test_a_bulk_insert_is_brought_up_to_date_by_one_call():
    role = make_role("everything", resource_kinds=["node"], resource_labels={})
    Resource.objects.bulk_create([Resource(kind="node", name=f"n{i}") for i in range(30)])
    assert rows() == set()

    role_scope_sync(resource_ids=Resource.objects.values_list("pk", flat=True))

    assert rows() == truth() and len(rows()) == 30
    assert {pk for _, pk in rows()} == set(Resource.objects.values_list("pk", flat=True))
    assert role.pk in {pk for pk, _ in rows()}


def test_syncing_a_role_costs_the_same_statements_for_ten_or_a_hundred_matches():
    role = make_role("r", resource_labels={})

    def statements(n: int) -> int:
        for i in range(n):
            make_resource(f"bulk-{n}-{i}")
        RoleResource.objects.all().delete()
        with CaptureQueriesContext(connection) as captured:
            role_scope_sync(roles=[role])
        assert rows() == truth()
        return len(captured.captured_queries)

    assert statements(10) == statements(100)


def _admin_form_data(response) -> dict:
    form = response.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if isinstance(value, (list, dict)) and name not in ("requestable_by", "reviewers"):
            data[name] = json.dumps(value)
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value
    return data


def test_the_role_admin_rescopes_a_role_whose_selector_changed(admin_client, requester):
    web = make_resource("web", labels={"env": "prod"})
    dev = make_resource("dev", labels={"env": "dev"})
    role = make_role("r", resource_labels={"env": ["prod"]})
    url = reverse("admin:accounts_role_change", args=[role.pk])
    data = _admin_form_data(admin_client.get(url))
    data["resource_labels"] = json.dumps({"env": ["dev"]})

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert list(resources_searchable_by(requester)) == [dev]
    assert rows() == {(role.pk, dev.pk)} and web.pk not in {pk for _, pk in rows()}


def test_the_resource_admin_rescopes_a_resource_whose_kind_changed(admin_client, requester):
    # The role comes second, so only the resource's own write can take its row away.
    web = make_resource("web")
    make_role("nodes", resource_kinds=["node"], resource_labels={})
    assert rows() == truth() != set()
    url = reverse("admin:inventory_resource_change", args=[web.pk])
    data = _admin_form_data(admin_client.get(url))
    data["kind"] = "db"

    response = admin_client.post(url, data)

    assert response.status_code == 302
    assert list(resources_searchable_by(requester)) == []
    assert rows() == truth() == set()
