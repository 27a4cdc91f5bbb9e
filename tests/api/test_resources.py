"""Resource search and the role list: scoped to what the caller may request."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import make_resource, make_role, make_user

RESOURCES = "/api/v1/resources/"


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [r["name"] for r in response.json()["results"]]


@pytest.fixture
def inventory(web1, web2, dev1, db1):
    return {"web-1": web1, "web-2": web2, "dev-1": dev1, "orders": db1}


# --- scoping --------------------------------------------------------------------


def test_user_sees_only_resources_a_requestable_role_matches(api, requester, prod_ssh, inventory):
    assert names(api(requester).get(RESOURCES)) == ["web-1", "web-2"]


def test_outsider_sees_no_resources(api, outsider, prod_ssh, inventory):
    response = api(outsider).get(RESOURCES)

    assert response.json() == {"count": 0, "count_exact": True, "next": None, "previous": None, "results": []}


def test_staff_without_groups_sees_no_resources(api, staff, prod_ssh, inventory):
    assert names(api(staff).get(RESOURCES)) == []


def test_role_requestable_by_another_group_does_not_widen_search(api, requester, prod_ssh, inventory):
    make_role("dev-ssh", requestable_by=("developers",), resource_labels={"env": ["dev"]})

    assert names(api(requester).get(RESOURCES)) == ["web-1", "web-2"]
    assert names(api(make_user(groups=("developers",))).get(RESOURCES)) == ["dev-1"]


def test_resource_outside_the_callers_scope_is_404_in_detail(api, requester, prod_ssh, inventory):
    client = api(requester)

    assert client.get(f"{RESOURCES}{inventory['web-1'].pk}/").json()["name"] == "web-1"
    assert client.get(f"{RESOURCES}{inventory['dev-1'].pk}/").status_code == 404
    assert client.get(f"{RESOURCES}not-an-id/").status_code == 404


def test_each_result_lists_the_roles_that_would_grant_it(api, requester, prod_ssh, inventory):
    make_role("any-node", resource_labels={"env": ["*"]})
    make_role("not-mine", requestable_by=("developers",), resource_labels={"env": ["*"]})

    results = api(requester).get(RESOURCES).json()["results"]

    assert {r["name"]: r["requestable_roles"] for r in results} == {
        "dev-1": ["any-node"],
        "web-1": ["any-node", "prod-ssh"],
        "web-2": ["any-node", "prod-ssh"],
    }


def test_result_shape(api, requester, prod_ssh, web1):
    result = api(requester).get(RESOURCES).json()["results"][0]

    assert result == {
        "id": web1.pk,
        "kind": "node",
        "name": "web-1",
        "address": "10.0.0.5:22",
        "labels": {"env": "prod", "team": "web"},
        "description": "",
        "requestable_roles": ["prod-ssh"],
    }


# --- filters --------------------------------------------------------------------


@pytest.fixture
def wide_role(db):
    """Nodes and databases in any environment, requestable by engineers."""
    return make_role("wide", resource_kinds=["node", "db"], resource_labels={})


def test_filter_by_kind(api, requester, wide_role, inventory):
    client = api(requester)

    assert names(client.get(RESOURCES, {"kind": "db"})) == ["orders"]
    assert names(client.get(RESOURCES, {"kind": "node"})) == ["dev-1", "web-1", "web-2"]
    assert names(client.get(RESOURCES, {"kind": "app"})) == []


@pytest.mark.parametrize(
    "query",
    [
        "label=env=prod&label=team=web",
        "label=env=prod,team=web",
        "label=env%3Dprod%2Cteam%3Dweb",
        "label=env=prod&label=team",
    ],
)
def test_label_selectors_repeatable_or_comma_separated_all_must_match(api, requester, wide_role, inventory, query):
    assert names(api(requester).get(f"{RESOURCES}?{query}")) == ["web-1", "web-2"]


def test_single_label_selector(api, requester, wide_role, inventory):
    client = api(requester)

    assert names(client.get(RESOURCES, {"label": "env=prod"})) == ["orders", "web-1", "web-2"]
    assert names(client.get(RESOURCES, {"label": "env=dev"})) == ["dev-1"]
    assert names(client.get(RESOURCES, {"label": "team"})) == ["dev-1", "web-1", "web-2"]
    assert names(client.get(RESOURCES, {"label": "env=staging"})) == []


def test_label_filter_cannot_reach_past_the_callers_scope(api, requester, prod_ssh, inventory):
    assert names(api(requester).get(RESOURCES, {"label": "env=dev"})) == []


def test_search_matches_name_address_and_description(api, requester, wide_role, inventory):
    make_resource("billing", labels={"env": "prod"}, description="Billing API host")
    client = api(requester)

    assert names(client.get(RESOURCES, {"search": "web-"})) == ["web-1", "web-2"]
    assert names(client.get(RESOURCES, {"search": "10.0.0.6"})) == ["web-2"]
    assert names(client.get(RESOURCES, {"search": "BILLING api"})) == ["billing"]
    assert names(client.get(RESOURCES, {"search": "nothing-like-this"})) == []


def test_filters_combine(api, requester, wide_role, inventory):
    response = api(requester).get(RESOURCES, {"kind": "node", "label": "env=prod", "search": "web-2"})

    assert names(response) == ["web-2"]


@pytest.mark.parametrize(
    ("query", "field"),
    [("kind=spaceship", "kind"), ("label==prod", "label"), ("label=env=prod,=dev", "label")],
)
def test_bad_filters_are_400_naming_the_filter(api, requester, prod_ssh, inventory, query, field):
    response = api(requester).get(f"{RESOURCES}?{query}")

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_page_past_the_end_is_404(api, requester, prod_ssh, inventory):
    assert api(requester).get(RESOURCES, {"page_size": 2, "page": 99}).status_code == 404


# --- pagination and queries -------------------------------------------------------


def test_pagination_shape_and_page_size(api, requester, wide_role):
    for i in range(5):
        make_resource(f"node-{i}")
    client = api(requester)

    first = client.get(RESOURCES, {"page_size": 2}).json()
    second = client.get(first["next"]).json()
    last = client.get(second["next"]).json()

    assert set(first) == {"count", "count_exact", "next", "previous", "results"}
    assert (first["count"], first["count_exact"]) == (5, True)
    assert [r["name"] for r in first["results"]] == ["node-0", "node-1"]
    assert first["previous"] is None
    assert "cursor=" in first["next"] and "page_size=2" in first["next"]
    assert [r["name"] for r in second["results"]] == ["node-2", "node-3"]
    assert [r["name"] for r in last["results"]] == ["node-4"]
    assert last["next"] is None
    assert [r["name"] for r in client.get(last["previous"]).json()["results"]] == ["node-2", "node-3"]
    assert [r["name"] for r in client.get(second["previous"]).json()["results"]] == ["node-0", "node-1"]
    assert client.get(second["previous"]).json()["previous"] is None


def test_pages_follow_kind_then_name_across_kinds(api, requester, wide_role):
    for name in ("b", "a", "c"):
        make_resource(name, kind="db")
        make_resource(name, kind="node")
    client = api(requester)

    seen, url = [], f"{RESOURCES}?page_size=2"
    while url:
        body = client.get(url).json()
        seen += [(r["kind"], r["name"]) for r in body["results"]]
        url = body["next"]

    assert seen == [("db", "a"), ("db", "b"), ("db", "c"), ("node", "a"), ("node", "b"), ("node", "c")]


def test_page_numbers_still_work_for_clients_that_count_pages(api, requester, wide_role):
    for i in range(5):
        make_resource(f"node-{i}")
    client = api(requester)

    first = client.get(RESOURCES, {"page_size": 2, "page": 1}).json()
    last = client.get(RESOURCES, {"page_size": 2, "page": 3}).json()

    assert [r["name"] for r in first["results"]] == ["node-0", "node-1"]
    assert "page=2" in first["next"]
    assert [r["name"] for r in last["results"]] == ["node-4"]
    assert last["next"] is None
    assert "page=2" in last["previous"]
    assert client.get(RESOURCES, {"page_size": 2, "page": "two"}).status_code == 404


def test_cursor_keeps_the_filters_and_the_scope(api, requester, prod_ssh, wide_role):
    for i in range(4):
        make_resource(f"web-{i}", labels={"env": "prod"})
        make_resource(f"dev-{i}", labels={"env": "dev"})
    first = api(requester).get(RESOURCES, {"label": "env=prod", "page_size": 3}).json()

    rest = api(requester).get(first["next"]).json()
    # Someone else following the same link sees only their own scope.
    stranger = api(make_user(groups=("nobody",))).get(first["next"]).json()

    assert [r["name"] for r in rest["results"]] == ["web-3"]
    assert stranger["results"] == []


@pytest.mark.parametrize("cursor", ["not-base64!", "bm90IGpzb24", "WzEsMiwzXQ", "WyJub2RlIiwiYSIsMl0"])
def test_a_bad_cursor_is_400_naming_cursor(api, requester, wide_role, cursor):
    response = api(requester).get(RESOURCES, {"cursor": cursor})

    assert response.status_code == 400
    assert list(response.json()) == ["cursor"]


def test_count_stops_at_the_cap_unless_the_exact_count_is_asked(api, requester, wide_role, monkeypatch):
    monkeypatch.setattr("inventory.pagination.COUNT_CAP", 3)
    for i in range(5):
        make_resource(f"node-{i}")
    client = api(requester)

    capped = client.get(RESOURCES).json()
    exact = client.get(RESOURCES, {"count": "exact"}).json()
    under = client.get(RESOURCES, {"search": "node-1"}).json()

    assert (capped["count"], capped["count_exact"], len(capped["results"])) == (3, False, 5)
    assert (exact["count"], exact["count_exact"]) == (5, True)
    assert (under["count"], under["count_exact"]) == (1, True)
    assert client.get(RESOURCES, {"count": "all"}).status_code == 400
    assert list(client.get(RESOURCES, {"count": "all"}).json()) == ["count"]


def test_search_text_with_a_line_break_is_400_naming_search(api, requester, wide_role, web1):
    response = api(requester).get(RESOURCES, {"search": "web\n10.0"})

    assert response.status_code == 400
    assert list(response.json()) == ["search"]


def test_search_never_matches_across_two_fields(api, requester, wide_role):
    make_resource("web-1", address="10.0.0.5:22", description="frontend")

    assert names(api(requester).get(RESOURCES, {"search": "web-1 10.0"})) == []
    assert names(api(requester).get(RESOURCES, {"search": "1010.0"})) == []
    assert names(api(requester).get(RESOURCES, {"search": "B-1"})) == ["web-1"]
    assert names(api(requester).get(RESOURCES, {"search": "FRONT"})) == ["web-1"]


def _list_queries(client, params=None) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(RESOURCES, {"page_size": 100, **(params or {})})
    assert response.status_code == 200
    return len(queries.captured_queries), response.json()["count"]


def test_resource_search_runs_a_constant_number_of_queries(api, requester, prod_ssh):
    make_role("any-node", resource_labels={"env": ["*"]})
    client = api(requester)
    for i in range(5):
        make_resource(f"few-{i}", labels={"env": "prod"})
    few_queries, few = _list_queries(client)
    for i in range(55):
        make_resource(f"many-{i}", labels={"env": "prod" if i % 2 else "dev"})

    many_queries, many = _list_queries(client)
    next_page = client.get(RESOURCES, {"page_size": 10}).json()["next"]
    with CaptureQueriesContext(connection) as deeper:
        assert client.get(next_page).status_code == 200
    exact_queries, _ = _list_queries(client, {"count": "exact"})
    by_number, _ = _list_queries(client, {"page": 1})

    assert (few, many) == (5, 60)
    assert many_queries == few_queries == len(deeper.captured_queries) == exact_queries == by_number


# --- roles ------------------------------------------------------------------------


def test_roles_lists_only_requestable_roles_with_durations_in_seconds(api, requester, prod_ssh):
    make_role("dev-ssh", requestable_by=("developers",))
    make_role("db-read", resource_kinds=["db"], max_duration=timedelta(minutes=90), pending_ttl=timedelta(hours=2))

    response = api(requester).get("/api/v1/roles/")

    assert response.status_code == 200
    roles = {r["name"]: r for r in response.json()["results"]}
    assert sorted(roles) == ["db-read", "prod-ssh"]
    assert roles["db-read"]["max_duration"] == 5400
    assert roles["db-read"]["pending_ttl"] == 7200
    assert roles["prod-ssh"]["max_duration"] == 3600
    assert roles["prod-ssh"]["approvals"] == 2
    assert roles["prod-ssh"]["reason"] == "required"
    assert roles["prod-ssh"]["reviewers"] == ["sre-leads"]
    assert roles["prod-ssh"]["logins"] == ["ubuntu"]


def test_user_in_several_requesting_groups_sees_each_role_once(api, prod_ssh):
    make_role("ops", requestable_by=("engineers", "oncall"))
    user = make_user(groups=("engineers", "oncall"))

    assert [r["name"] for r in api(user).get("/api/v1/roles/").json()["results"]] == ["ops", "prod-ssh"]


def test_outsider_and_reviewer_list_no_roles(api, outsider, reviewer, prod_ssh):
    assert api(outsider).get("/api/v1/roles/").json()["count"] == 0
    assert api(reviewer).get("/api/v1/roles/").json()["count"] == 0


def test_role_detail_by_name_only_for_requestable_roles(api, requester, prod_ssh):
    make_role("dev-ssh", requestable_by=("developers",))
    client = api(requester)

    assert client.get("/api/v1/roles/prod-ssh/").json()["name"] == "prod-ssh"
    assert client.get("/api/v1/roles/dev-ssh/").status_code == 404
    assert client.get("/api/v1/roles/nope/").status_code == 404


# --- rows built without the serializer; labels beside a text search --------------------


def test_each_listed_row_is_the_detail_body_of_that_resource(api, requester, prod_ssh, wide_role, inventory):
    make_resource("odd", labels={"env": "prod", "tier": "gold", "a/b.c": "x y"}, description='quote " and <tag>')
    client = api(requester)

    rows = client.get(RESOURCES).json()["results"]

    assert {r["name"] for r in rows} == {"dev-1", "odd", "orders", "web-1", "web-2"}
    for row in rows:
        assert client.get(f"{RESOURCES}{row['id']}/").json() == row
    assert {r["name"]: r["requestable_roles"] for r in rows}["web-1"] == ["prod-ssh", "wide"]


def test_labels_narrow_a_text_search_the_same_whether_the_text_uses_the_index(api, requester, wide_role):
    make_resource("web-a", labels={"env": "prod", "team": "web"})
    make_resource("web-b", labels={"env": "dev", "team": "web"})
    make_resource("web-c", labels={"env": "prod"})
    make_resource("web-d", labels={"environment": "prod", "team": "api"})
    make_resource("api-a", labels={"env": "prod", "team": "web"})
    client = api(requester)

    # Three characters or more: the text's index narrows and labels are tested on those rows.
    assert names(client.get(RESOURCES, {"search": "web-", "label": "env=prod"})) == ["web-a", "web-c"]
    assert names(client.get(RESOURCES, {"search": "web-", "label": "team"})) == ["web-a", "web-b", "web-d"]
    assert names(client.get(RESOURCES, {"search": "web-", "label": ["env=prod", "team=web"]})) == ["web-a"]
    assert names(client.get(RESOURCES, {"search": "web-", "label": "env"})) == ["web-a", "web-b", "web-c"]
    # Shorter text: the labels' own index.
    assert names(client.get(RESOURCES, {"search": "we", "label": "env=prod"})) == ["web-a", "web-c"]
    assert names(client.get(RESOURCES, {"search": "we", "label": "team"})) == ["web-a", "web-b", "web-d"]
