"""Grants over the API: who sees which, their state from timestamps, early revocation."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from requests_app import services
from requests_app.models import AccessRequest, Grant
from tests.conftest import make_user

GRANTS = "/api/v1/grants/"


def approved_request(requester, reviewers, *resources) -> AccessRequest:
    made = services.request_create(requester=requester, resources=list(resources), reason="INC-1")
    for reviewer in reviewers:
        services.request_review(request=made, reviewer=reviewer, decision="approve")
    made.refresh_from_db()
    assert made.state == AccessRequest.State.APPROVED
    return made


def shift(grant: Grant, *, starts: timedelta, ends: timedelta) -> None:
    """Move a grant's window relative to now, straight in the database."""
    now = timezone.now()
    Grant.objects.filter(pk=grant.pk).update(starts_at=now + starts, expires_at=now + ends)


@pytest.fixture
def reviewers(reviewer, reviewer2):
    return [reviewer, reviewer2]


@pytest.fixture
def dave(db):
    return make_user("dave", groups=("engineers",))


@pytest.fixture
def alice_grant(requester, reviewers, prod_ssh, web1) -> Grant:
    return approved_request(requester, reviewers, web1).grants.get()


def grant_ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {g["id"] for g in response.json()["results"]}


# --- visibility -----------------------------------------------------------------------


def test_users_see_only_their_own_grants(api, requester, dave, reviewers, prod_ssh, web1, web2):
    alices = approved_request(requester, reviewers, web1, web2)
    daves = approved_request(dave, reviewers, web1)

    assert grant_ids(api(requester).get(GRANTS)) == set(alices.grants.values_list("pk", flat=True))
    assert grant_ids(api(dave).get(GRANTS)) == set(daves.grants.values_list("pk", flat=True))
    assert api(requester).get(f"{GRANTS}{daves.grants.get().pk}/").status_code == 404
    assert api(requester).get(GRANTS, {"user": "dave"}).json()["count"] == 0


def test_reviewers_and_outsiders_see_no_grants_of_others(api, alice_grant, reviewer, outsider):
    assert grant_ids(api(reviewer).get(GRANTS)) == set()
    assert grant_ids(api(outsider).get(GRANTS)) == set()


def test_auditors_see_every_grant_and_can_filter_by_user(api, requester, dave, auditor, reviewers, prod_ssh, web1):
    alices = approved_request(requester, reviewers, web1).grants.get()
    daves = approved_request(dave, reviewers, web1).grants.get()

    assert grant_ids(api(auditor).get(GRANTS)) == {alices.pk, daves.pk}
    assert grant_ids(api(auditor).get(GRANTS, {"user": "dave"})) == {daves.pk}
    assert api(auditor).get(f"{GRANTS}{alices.pk}/").json()["user"] == "alice"


def test_grant_shape(api, requester, alice_grant, web1):
    body = api(requester).get(f"{GRANTS}{alice_grant.pk}/").json()

    assert body == {
        "id": alice_grant.pk,
        "request": str(alice_grant.request_id),
        "user": "alice",
        "role": "prod-ssh",
        "logins": ["ubuntu"],
        "resource": {"id": web1.pk, "kind": "node", "name": "web-1", "ref": "node/web-1"},
        "state": "active",
        "starts_at": body["starts_at"],
        "expires_at": body["expires_at"],
        "revoked_at": None,
        "revoked_by": None,
        "revoke_reason": "",
    }
    assert body["starts_at"] < body["expires_at"]


def test_role_based_grant_has_no_resource(api, requester, reviewers, prod_ssh):
    made = services.request_create(requester=requester, roles=[prod_ssh], reason="INC-1")
    for reviewer in reviewers:
        services.request_review(request=made, reviewer=reviewer, decision="approve")

    results = api(requester).get(GRANTS).json()["results"]

    assert [(g["role"], g["resource"], g["state"]) for g in results] == [("prod-ssh", None, "active")]


# --- state and the active filter ----------------------------------------------------------


@pytest.fixture
def four_grants(requester, reviewers, prod_ssh, web1, web2, dev1) -> dict[str, Grant]:
    """One grant in each state, made by moving timestamps directly."""
    grants = {}
    for state in ("scheduled", "active", "expired", "revoked"):
        grants[state] = approved_request(requester, reviewers, web1).grants.get()
    shift(grants["scheduled"], starts=timedelta(hours=1), ends=timedelta(hours=2))
    shift(grants["expired"], starts=-timedelta(hours=2), ends=-timedelta(seconds=1))
    Grant.objects.filter(pk=grants["revoked"].pk).update(revoked_at=timezone.now(), revoke_reason="done")
    return grants


def test_state_is_computed_from_timestamps(api, requester, four_grants):
    results = api(requester).get(GRANTS).json()["results"]

    assert {g["id"]: g["state"] for g in results} == {grant.pk: state for state, grant in four_grants.items()}


@pytest.mark.parametrize(("yes", "no"), [("true", "false"), ("True", "False"), ("1", "0")])
def test_active_filter_splits_active_from_the_rest(api, requester, four_grants, yes, no):
    client = api(requester)

    assert grant_ids(client.get(GRANTS, {"active": yes})) == {four_grants["active"].pk}
    assert grant_ids(client.get(GRANTS, {"active": no})) == {
        four_grants[state].pk for state in ("scheduled", "expired", "revoked")
    }
    assert len(grant_ids(client.get(GRANTS))) == 4
    assert len(grant_ids(client.get(GRANTS, {"active": ""}))) == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [("active=perhaps", "active"), ("active=yes", "active"), ("active=2", "active"), ("request=not-a-uuid", "request")],
)
def test_bad_grant_filters_are_400(api, requester, alice_grant, query, field):
    response = api(requester).get(f"{GRANTS}?{query}")

    assert response.status_code == 400
    assert field in response.json()


def test_grants_list_runs_a_constant_number_of_queries(api, requester, auditor, revoker, reviewers, prod_ssh, web1):
    def list_queries(client):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(GRANTS, {"page_size": 100})
        assert response.status_code == 200
        return len(queries.captured_queries), response.json()["count"]

    owner, everything = api(requester), api(auditor)
    for _ in range(3):
        approved_request(requester, reviewers, web1)
    # Each client's user caches its permissions on its first call (two queries, once per API call in real use).
    list_queries(owner), list_queries(everything)
    few = [list_queries(owner), list_queries(everything)]
    for grant in Grant.objects.all()[:1]:
        services.grant_revoke(grant=grant, by=revoker, reason="revoked_by shows a user")
    for _ in range(27):
        approved_request(requester, reviewers, web1)

    many = [list_queries(owner), list_queries(everything)]

    assert [count for _, count in few] == [3, 3]
    assert [count for _, count in many] == [30, 30]
    assert [queries for queries, _ in many] == [queries for queries, _ in few]


# --- revoke -----------------------------------------------------------------------------


def revoke(client, grant: Grant, body: object = None):
    return client.post(f"{GRANTS}{grant.pk}/revoke/", data=json.dumps(body or {}), content_type="application/json")


def check(client, resource="node/web-1") -> dict:
    return client.get("/api/v1/access-check/", {"resource": resource, "login": "ubuntu"}).json()


def test_a_revoker_ends_access_at_once(api, requester, revoker, alice_grant):
    assert check(api(requester))["allowed"] is True

    response = revoke(api(revoker), alice_grant, {"reason": "incident over"})

    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["revoked_by"], body["revoke_reason"]) == ("revoked", "ray", "incident over")
    assert body["revoked_at"] is not None
    assert check(api(requester))["allowed"] is False
    alice_grant.request.refresh_from_db()
    assert alice_grant.request.state == AccessRequest.State.REVOKED
    assert AuditEvent.objects.filter(
        action="grant.revoked", actor_username="ray", target_id=str(alice_grant.pk)
    ).exists()


def test_revoking_one_grant_keeps_the_others(api, requester, revoker, reviewers, prod_ssh, web1, web2):
    made = approved_request(requester, reviewers, web1, web2)
    first = made.grants.get(resource=web1)

    revoke(api(revoker), first, {"reason": "web-1 only"})

    made.refresh_from_db()
    assert made.state == AccessRequest.State.APPROVED
    assert check(api(requester), "node/web-1")["allowed"] is False
    assert check(api(requester), "node/web-2")["allowed"] is True


def test_owner_without_revoke_cannot_revoke(api, requester, alice_grant):
    response = revoke(api(requester), alice_grant, {"reason": "done early"})

    assert response.status_code == 403
    alice_grant.refresh_from_db()
    assert alice_grant.revoked_at is None


@pytest.mark.parametrize("who", ["bob", "mallory", "dave"])
def test_others_without_revoke_cannot_even_see_the_grant_to_revoke(api, requester, outsider, dave, alice_grant, who):
    response = revoke(api(type(requester).objects.get(username=who)), alice_grant, {"reason": "x"})

    assert response.status_code == 404
    alice_grant.refresh_from_db()
    assert alice_grant.revoked_at is None


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}])
def test_revoke_needs_a_reason(api, revoker, alice_grant, body):
    response = revoke(api(revoker), alice_grant, body)

    assert response.status_code == 400
    assert "reason" in response.json()
    alice_grant.refresh_from_db()
    assert alice_grant.revoked_at is None


def test_second_revoke_is_409(api, revoker, alice_grant):
    revoke(api(revoker), alice_grant, {"reason": "first"})

    response = revoke(api(revoker), alice_grant, {"reason": "second"})

    assert response.status_code == 409
    alice_grant.refresh_from_db()
    assert alice_grant.revoke_reason == "first"


def test_revoking_an_expired_grant_is_409(api, revoker, alice_grant):
    shift(alice_grant, starts=-timedelta(hours=2), ends=-timedelta(minutes=1))

    response = revoke(api(revoker), alice_grant, {"reason": "too late"})

    assert response.status_code == 409
    alice_grant.refresh_from_db()
    assert alice_grant.revoked_at is None


def test_revoke_of_unknown_grant_is_404(api, revoker, alice_grant):
    assert api(revoker).post(f"{GRANTS}999999/revoke/", {"reason": "x"}).status_code == 404
    assert api(revoker).post(f"{GRANTS}abc/revoke/", {"reason": "x"}).status_code == 404


@pytest.mark.parametrize(
    "body",
    [None, 5, "stop", ["stop"], {"reason": None}, {"reason": {"r": "x"}}, {"reason": ["x"]}, {"reason": "x" * 4097}],
)
def test_wrong_typed_revoke_bodies_are_400_and_revoke_nothing(api, revoker, alice_grant, body):
    response = api(revoker).post(
        f"{GRANTS}{alice_grant.pk}/revoke/", data=json.dumps(body), content_type="application/json"
    )

    assert response.status_code == 400, response.content
    alice_grant.refresh_from_db()
    assert alice_grant.revoked_at is None
