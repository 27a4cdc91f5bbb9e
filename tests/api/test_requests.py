"""Access requests over the API: create, list, detail, review, cancel."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.scope import role_scope_sync
from audit.models import AuditEvent
from inventory.models import Resource
from requests_app import services
from requests_app.models import AccessRequest, Review
from tests.conftest import make_resource, make_role, make_user

REQUESTS = "/api/v1/requests/"


def post_raw(client, url: str, body: object):
    """POST ``body`` as JSON, whatever its type (a list, a string, null...)."""
    return client.post(url, data=json.dumps(body), content_type="application/json")


def pending_request(requester, *resources, roles=(), reason="INC-1") -> AccessRequest:
    return services.request_create(requester=requester, resources=list(resources), roles=list(roles), reason=reason)


@pytest.fixture
def prod_db(db):
    """Databases in prod, up to 4h, reason optional, reviewed by db-leads."""
    return make_role("prod-db", resource_kinds=["db"], max_duration=timedelta(hours=4), reviewers=("db-leads",))


@pytest.fixture
def dave(db):
    """Another engineer: may request, may not review."""
    return make_user("dave", groups=("engineers",))


# --- create -----------------------------------------------------------------------


def test_create_by_resource_ids_picks_the_matching_role(api, requester, prod_ssh, web1, web2):
    response = api(requester).post(REQUESTS, {"resources": [web1.pk, web2.pk], "reason": "INC-1"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["requester"] == "alice"
    assert body["state"] == "pending"
    assert body["roles"] == ["prod-ssh"]
    assert [r["ref"] for r in body["resources"]] == ["node/web-1", "node/web-2"]
    assert (body["approvals_required"], body["approvals"], body["denials_required"]) == (2, 0, 1)
    assert body["reviews"] == [] and body["grants"] == []
    created = AccessRequest.objects.get(pk=body["id"])
    assert created.requester == requester
    assert AuditEvent.objects.filter(action="request.created", target_id=body["id"]).exists()


def test_create_by_kind_and_name(api, requester, prod_ssh, web1):
    response = api(requester).post(REQUESTS, {"resources": ["node/web-1"], "reason": "INC-1"})

    assert response.status_code == 201
    assert [r["id"] for r in response.json()["resources"]] == [web1.pk]


def test_create_role_based_by_roles(api, requester, prod_ssh, web1):
    response = api(requester).post(REQUESTS, {"roles": ["prod-ssh"], "reason": "INC-1"})

    assert response.status_code == 201
    assert response.json()["roles"] == ["prod-ssh"]
    assert response.json()["resources"] == []


def test_create_with_suggested_reviewers_and_start_time(api, requester, reviewer, prod_ssh, web1):
    start = timezone.now() + timedelta(hours=2)

    response = api(requester).post(
        REQUESTS,
        {
            "resources": ["node/web-1"],
            "reason": "INC-1",
            "suggested_reviewers": ["bob"],
            "start_time": start.isoformat(),
        },
    )

    assert response.status_code == 201
    assert response.json()["suggested_reviewers"] == ["bob"]
    assert AccessRequest.objects.get().start_time == start


def test_auto_approve_role_is_approved_at_once_with_grants(api, requester, web1):
    make_role("self-serve", auto_approve=True)

    response = api(requester).post(REQUESTS, {"roles": ["self-serve"]})

    assert response.status_code == 201
    assert response.json()["state"] == "approved"
    assert [g["state"] for g in response.json()["grants"]] == ["active"]


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        (1800, 1800),
        ("1800", 1800),
        ("45s", 45),
        ("30m", 1800),
        ("90m", 5400),
        ("1h30m", 5400),
        ("4h", 14400),
        (None, 3600),
    ],
)
def test_durations_in_seconds_or_go_style_come_back_as_seconds(api, requester, prod_db, db1, duration, seconds):
    response = api(requester).post(REQUESTS, {"resources": ["db/orders"], "duration": duration})

    assert response.status_code == 201, response.content
    assert response.json()["duration"] == seconds
    assert AccessRequest.objects.get().duration == timedelta(seconds=seconds)


def test_default_duration_is_the_smaller_of_an_hour_and_the_role_cap(api, requester, prod_db, db1):
    make_role("short", max_duration=timedelta(minutes=20))
    client = api(requester)

    assert client.post(REQUESTS, {"roles": ["short"]}).json()["duration"] == 1200
    assert client.post(REQUESTS, {"roles": ["prod-db"]}).json()["duration"] == 3600


def test_roles_named_with_resources_choose_between_matching_roles(api, requester, prod_ssh, web1):
    make_role("web-ssh", resource_labels={"team": ["web"]})

    response = api(requester).post(REQUESTS, {"resources": ["node/web-1"], "roles": ["web-ssh"]})

    assert response.status_code == 201
    assert response.json()["roles"] == ["web-ssh"]


# --- create: refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"resources": ["node/nope"], "reason": "x"}, "resources", "node/nope"),
        ({"resources": [987654], "reason": "x"}, "resources", "987654"),
        ({"resources": [99999999999999999999999], "reason": "x"}, "resources", "no such resource"),
        ({"resources": ["not a ref"], "reason": "x"}, "resources", "not a resource id"),
        ({"resources": ["node/dev-1"], "reason": "x"}, "resources", "node/dev-1"),
        ({"resources": ["node/web-1", "node/nope"], "reason": "x"}, "resources", "node/nope"),
        ({"roles": ["nope"], "reason": "x"}, "roles", "nope"),
        ({"roles": ["dev-only"], "reason": "x"}, "roles", "dev-only"),
        ({"resources": ["node/web-1"], "roles": ["prod-db"], "reason": "x"}, "resources", "node/web-1"),
        ({"resources": ["node/web-1"], "roles": ["prod-ssh", "prod-db"], "reason": "x"}, "roles", "prod-db"),
        ({"reason": "x"}, "resources", "at least one"),
        ({"resources": [], "roles": [], "reason": "x"}, "resources", "at least one"),
        ({"resources": ["node/web-1"], "reason": "x", "duration": 0}, "duration", "positive"),
        ({"resources": ["node/web-1"], "reason": "x", "duration": "0s"}, "duration", "positive"),
        ({"resources": ["node/web-1"], "reason": "x", "duration": -5}, "duration", "positive"),
        ({"resources": ["node/web-1"], "reason": "x", "duration": "abc"}, "duration", "abc"),
        ({"resources": ["node/web-1"], "reason": "x", "duration": True}, "duration", ""),
        ({"resources": ["node/web-1"], "reason": "x", "duration": "2h"}, "duration", "maximum of 1h"),
        ({"resources": ["node/web-1"], "reason": "x", "duration": 3601}, "duration", "maximum of 1h"),
        ({"resources": ["node/web-1"]}, "reason", "required by role prod-ssh (link the ticket)"),
        ({"resources": ["node/web-1"], "reason": "   "}, "reason", "required"),
        ({"resources": ["node/web-1"], "reason": "x" * 4097}, "reason", "4096"),
        ({"resources": ["node/web-1"], "reason": "x", "start_time": "2020-01-01T00:00:00Z"}, "start_time", "past"),
        ({"resources": ["node/web-1"], "reason": "x", "start_time": "tomorrow"}, "start_time", ""),
        ({"resources": ["node/web-1"], "reason": "x", "start_time": "2999-01-01T00:00:00Z"}, "start_time", "ahead"),
        (
            {"resources": ["node/web-1"], "reason": "x", "suggested_reviewers": ["nobody"]},
            "suggested_reviewers",
            "nobody",
        ),
        (
            {"resources": ["node/web-1"], "reason": "x", "suggested_reviewers": ["alice"]},
            "suggested_reviewers",
            "yourself",
        ),
        ({"resources": "node/web-1", "reason": "x"}, "resources", "list"),
        ({"resources": 5, "reason": "x"}, "resources", "list"),
        ({"resources": {"id": 1}, "reason": "x"}, "resources", "list"),
        ({"roles": "prod-ssh", "reason": "x"}, "roles", "list"),
        ({"resources": ["node/web-1"], "reason": "x", "suggested_reviewers": "bob"}, "suggested_reviewers", "list"),
    ],
)
def test_bad_request_is_400_naming_the_field_and_creates_nothing(
    api, requester, reviewer, prod_ssh, prod_db, web1, dev1, body, field, says
):
    make_role("dev-only", requestable_by=("developers",))
    before = AccessRequest.objects.count()

    response = api(requester).post(REQUESTS, body)

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert says in " ".join(map(str, response.json()[field]))
    assert AccessRequest.objects.count() == before


def test_ambiguous_role_choice_is_400_listing_the_candidates(api, requester, prod_ssh, web1, web2):
    make_role("web-ssh", resource_labels={"team": ["web"]})

    response = api(requester).post(REQUESTS, {"resources": ["node/web-1"], "reason": "x"})

    assert response.status_code == 400
    message = response.json()["roles"][0]
    assert "node/web-1" in message and "prod-ssh" in message and "web-ssh" in message
    assert not AccessRequest.objects.exists()


def test_more_than_300_resources_is_400(api, requester, db):
    make_role("everything", resource_labels={})
    Resource.objects.bulk_create([Resource(kind="node", name=f"n{i:03}") for i in range(301)])
    # A bulk insert bypasses the inventory's service, so it brings the role scopes up to date itself.
    role_scope_sync(resource_ids=Resource.objects.values_list("pk", flat=True))
    ids = list(Resource.objects.values_list("pk", flat=True))
    client = api(requester)

    too_many = client.post(REQUESTS, {"resources": ids})
    just_enough = client.post(REQUESTS, {"resources": ids[:300]})

    assert too_many.status_code == 400
    assert "300" in too_many.json()["resources"][0]
    assert just_enough.status_code == 201
    assert len(just_enough.json()["resources"]) == 300


def test_300_unknown_kind_name_refs_are_a_400_not_a_crash(api, requester, prod_ssh):
    response = api(requester).post(REQUESTS, {"resources": [f"node/missing-{i}" for i in range(300)]})

    assert response.status_code == 400
    assert "node/missing-0" in response.json()["resources"][0]


def test_thousands_of_refs_are_refused_before_any_lookup(api, requester, prod_ssh):
    response = api(requester).post(REQUESTS, {"resources": [f"node/missing-{i}" for i in range(5000)]})

    assert response.status_code == 400
    assert "resources" in response.json()


@pytest.mark.parametrize("body", [[], ["node/web-1"], "node/web-1", 42, None, True])
def test_json_body_that_is_not_an_object_is_400(api, requester, prod_ssh, web1, body):
    response = post_raw(api(requester), REQUESTS, body)

    assert response.status_code == 400
    assert "non_field_errors" in response.json()
    assert not AccessRequest.objects.exists()


def test_body_that_is_not_json_is_400(api, requester, prod_ssh, web1):
    response = api(requester).post(REQUESTS, data="resources=node/web-1", content_type="application/json")

    assert response.status_code == 400
    assert "detail" in response.json()


def test_requester_outside_every_group_cannot_create(api, outsider, prod_ssh, web1):
    response = api(outsider).post(REQUESTS, {"resources": ["node/web-1"], "reason": "x"})

    assert response.status_code == 400
    assert "node/web-1" in response.json()["resources"][0]
    assert not AccessRequest.objects.exists()


# --- list -----------------------------------------------------------------------------


def ids(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {r["id"] for r in response.json()["results"]}


def test_list_shows_own_and_reviewable_requests_only(api, requester, dave, reviewer, outsider, prod_ssh, web1):
    mine = str(pending_request(requester, web1).pk)
    daves = str(pending_request(dave, web1).pk)

    assert ids(api(requester).get(REQUESTS)) == {mine}
    assert ids(api(requester).get(REQUESTS, {"scope": "mine"})) == {mine}
    assert ids(api(requester).get(REQUESTS, {"scope": "review"})) == set()
    assert ids(api(reviewer).get(REQUESTS)) == {mine, daves}
    assert ids(api(reviewer).get(REQUESTS, {"scope": "review"})) == {mine, daves}
    assert ids(api(reviewer).get(REQUESTS, {"scope": "mine"})) == set()
    assert ids(api(outsider).get(REQUESTS)) == set()


def test_reviewer_who_also_requests_sees_own_in_mine_but_not_in_review(api, requester, dave, prod_ssh, web1):
    lead = make_user("erin", groups=("engineers", "sre-leads"))
    own = str(pending_request(lead, web1).pk)
    daves = str(pending_request(dave, web1).pk)

    assert ids(api(lead).get(REQUESTS, {"scope": "mine"})) == {own}
    assert ids(api(lead).get(REQUESTS, {"scope": "review"})) == {daves}


def test_scope_review_is_what_awaits_my_review_and_reviewable_keeps_the_rest(
    api, requester, dave, reviewer, reviewer2, prod_ssh, web1
):
    answered = pending_request(requester, web1)
    waiting = str(pending_request(dave, web1).pk)
    decided = pending_request(dave, web1)
    services.request_review(request=answered, reviewer=reviewer, decision="approve", reason="ok")
    services.request_review(request=decided, reviewer=reviewer2, decision="deny", reason="no")

    assert ids(api(reviewer).get(REQUESTS, {"scope": "review"})) == {waiting}
    assert ids(api(reviewer2).get(REQUESTS, {"scope": "review"})) == {str(answered.pk), waiting}
    assert ids(api(reviewer).get(REQUESTS, {"scope": "reviewable"})) == {str(answered.pk), waiting, str(decided.pk)}
    assert ids(api(reviewer).get(REQUESTS, {"scope": "review", "state": "pending"})) == {waiting}


def test_auditors_list_every_request(api, requester, dave, auditor, prod_ssh, web1):
    made = {str(pending_request(requester, web1).pk), str(pending_request(dave, web1).pk)}

    assert ids(api(auditor).get(REQUESTS)) == made
    assert ids(api(auditor).get(REQUESTS, {"scope": "review"})) == set()


@pytest.mark.parametrize("who", ["staff", "revoker"])
def test_staff_and_revokers_list_only_their_own_requests(request, api, requester, prod_ssh, web1, who):
    pending_request(requester, web1)

    assert ids(api(request.getfixturevalue(who)).get(REQUESTS)) == set()


def test_list_filters_by_state(api, requester, prod_ssh, web1):
    kept = str(pending_request(requester, web1).pk)
    cancelled = pending_request(requester, web1)
    services.request_cancel(request=cancelled, user=requester)
    client = api(requester)

    assert ids(client.get(REQUESTS, {"state": "pending"})) == {kept}
    assert ids(client.get(REQUESTS, {"state": "cancelled"})) == {str(cancelled.pk)}
    assert ids(client.get(f"{REQUESTS}?state=pending&state=cancelled")) == {kept, str(cancelled.pk)}
    assert ids(client.get(REQUESTS, {"state": "approved"})) == set()


def test_list_is_newest_first_and_paginated(api, requester, prod_ssh, web1):
    made = [str(pending_request(requester, web1).pk) for _ in range(3)]

    body = api(requester).get(REQUESTS, {"page_size": 2}).json()

    assert body["count"] == 3
    assert [r["id"] for r in body["results"]] == made[::-1][:2]
    assert body["next"] and body["previous"] is None


@pytest.mark.parametrize(("query", "field"), [("scope=everything", "scope"), ("state=approvedish", "state")])
def test_bad_scope_or_state_is_400(api, requester, prod_ssh, query, field):
    response = api(requester).get(f"{REQUESTS}?{query}")

    assert response.status_code == 400
    assert field in response.json()


def _list_queries(client) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(REQUESTS, {"page_size": 100})
    assert response.status_code == 200
    return len(queries.captured_queries), response.json()["count"]


def _approved_requests(requester, reviewer, reviewer2, resources, n: int) -> None:
    for _ in range(n):
        made = pending_request(requester, *resources)
        services.request_review(request=made, reviewer=reviewer, decision="approve")
        services.request_review(request=made, reviewer=reviewer2, decision="approve")


def test_request_list_runs_a_constant_number_of_queries(
    api, requester, reviewer, reviewer2, auditor, prod_ssh, web1, web2
):
    reviewer_view, staff_view = api(reviewer), api(auditor)
    _approved_requests(requester, reviewer, reviewer2, [web1, web2], 3)
    # Each client's user caches its permissions on its first call (two queries, once per API call in real use).
    _list_queries(reviewer_view), _list_queries(staff_view)
    few = (_list_queries(reviewer_view), _list_queries(staff_view))
    _approved_requests(requester, reviewer, reviewer2, [web1, web2], 27)

    many = (_list_queries(reviewer_view), _list_queries(staff_view))

    assert [count for _, count in few] == [3, 3]
    assert [count for _, count in many] == [30, 30]
    assert [queries for queries, _ in many] == [queries for queries, _ in few]


# --- detail ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("alice", 200),
        ("bob", 200),
        ("erin", 200),
        ("mallory", 404),
        ("dave", 404),
        ("dbadmin", 404),
        ("stella", 404),
        ("ray", 404),
    ],
)
def test_detail_visible_to_requester_eligible_reviewer_and_auditor_only(
    api, requester, reviewer, auditor, staff, revoker, outsider, dave, prod_ssh, web1, who, status
):
    make_user("dbadmin", groups=("db-leads",))
    made = pending_request(requester, web1)
    caller = type(requester).objects.get(username=who)

    response = api(caller).get(f"{REQUESTS}{made.pk}/")

    assert response.status_code == status
    if status == 200:
        assert response.json()["id"] == str(made.pk)


def test_detail_shows_reviews_thresholds_and_grants(api, requester, reviewer, reviewer2, prod_ssh, web1, web2):
    made = pending_request(requester, web1, web2)
    client = api(requester)
    services.request_review(request=made, reviewer=reviewer, decision="approve", reason="looks fine")

    halfway = client.get(f"{REQUESTS}{made.pk}/").json()
    services.request_review(request=made, reviewer=reviewer2, decision="approve", reason="ok")
    done = client.get(f"{REQUESTS}{made.pk}/").json()

    assert halfway["state"] == "pending"
    assert (halfway["approvals"], halfway["approvals_required"]) == (1, 2)
    assert [set(r) for r in halfway["reviews"]] == [{"reviewer", "decision", "reason", "duration", "created_at"}]
    assert (halfway["reviews"][0]["reviewer"], halfway["reviews"][0]["decision"]) == ("bob", "approve")
    assert halfway["reviews"][0]["reason"] == "looks fine"
    assert halfway["grants"] == []
    assert done["state"] == "approved"
    assert (done["approvals"], done["approvals_required"]) == (2, 2)
    assert [r["reviewer"] for r in done["reviews"]] == ["bob", "carol"]
    assert sorted((g["resource"]["ref"], g["role"], g["state"]) for g in done["grants"]) == [
        ("node/web-1", "prod-ssh", "active"),
        ("node/web-2", "prod-ssh", "active"),
    ]
    assert done["resolved_at"] is not None


@pytest.mark.parametrize("path", ["not-a-uuid/", "1234/", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz/"])
def test_malformed_request_id_is_404_in_detail(api, requester, prod_ssh, path):
    assert api(requester).get(f"{REQUESTS}{path}").status_code == 404


@pytest.mark.parametrize("path", ["0000/reviews/", "xyz/cancel/", "1/reviews/"])
def test_malformed_request_id_is_404_in_actions(api, requester, prod_ssh, path):
    assert api(requester).post(f"{REQUESTS}{path}", {"decision": "approve"}).status_code == 404


def test_unknown_request_id_is_404(api, requester, reviewer, prod_ssh):
    missing = uuid.uuid4()

    assert api(requester).get(f"{REQUESTS}{missing}/").status_code == 404
    assert api(requester).post(f"{REQUESTS}{missing}/cancel/").status_code == 404
    assert api(reviewer).post(f"{REQUESTS}{missing}/reviews/", {"decision": "approve"}).status_code == 404


# --- reviews --------------------------------------------------------------------------


def review(client, access_request, decision="approve", reason="ok"):
    return client.post(f"{REQUESTS}{access_request.pk}/reviews/", {"decision": decision, "reason": reason})


def test_eligible_reviewer_approval_is_201_with_the_request_state(api, requester, reviewer, prod_ssh, web1):
    made = pending_request(requester, web1)

    response = review(api(reviewer), made, reason="ticket checked")

    assert response.status_code == 201
    body = response.json()
    assert (body["reviewer"], body["decision"], body["reason"]) == ("bob", "approve", "ticket checked")
    assert body["request_state"] == "pending"  # prod-ssh needs two approvals
    assert made.reviews.count() == 1


def test_second_approval_meets_the_threshold_and_creates_grants(api, requester, reviewer, reviewer2, prod_ssh, web1):
    made = pending_request(requester, web1)
    review(api(reviewer), made)

    response = review(api(reviewer2), made)

    assert response.json()["request_state"] == "approved"
    made.refresh_from_db()
    assert made.state == AccessRequest.State.APPROVED
    assert made.grants.count() == 1
    assert AuditEvent.objects.filter(action="request.approved", target_id=str(made.pk)).count() == 1


def test_one_denial_denies_and_creates_no_grant(api, requester, reviewer, prod_ssh, web1):
    made = pending_request(requester, web1)

    response = review(api(reviewer), made, decision="deny", reason="no ticket")

    assert response.status_code == 201
    assert response.json()["request_state"] == "denied"
    assert not made.grants.exists()


def test_requester_cannot_approve_own_request_even_as_a_reviewer(api, prod_ssh, web1):
    lead = make_user("erin", groups=("engineers", "sre-leads"))
    made = pending_request(lead, web1)

    response = review(api(lead), made)

    assert response.status_code == 403
    assert "own" in response.json()["detail"]
    made.refresh_from_db()
    assert made.state == AccessRequest.State.PENDING
    assert not Review.objects.exists()
    event = AuditEvent.objects.get(action="review.refused_self")
    assert (event.actor_username, event.target_id) == ("erin", str(made.pk))


@pytest.mark.parametrize("who", ["mallory", "dave", "erin", "stella"])
def test_ineligible_reviewer_is_refused_and_audited(
    api, requester, outsider, dave, auditor, staff, prod_ssh, web1, who
):
    made = pending_request(requester, web1)

    response = review(api(type(requester).objects.get(username=who)), made)

    # An auditor (erin) sees the request, so is told why; the others are answered as for a missing one.
    assert response.status_code == (403 if who == "erin" else 404)
    assert not Review.objects.exists()
    assert AuditEvent.objects.filter(action="review.refused_ineligible", actor_username=who).count() == 1


def test_reviewer_eligible_for_only_some_roles_is_refused(api, requester, reviewer, prod_ssh, prod_db, web1, db1):
    made = pending_request(requester, web1, db1)
    assert sorted(made.roles.values_list("name", flat=True)) == ["prod-db", "prod-ssh"]

    response = review(api(reviewer), made)

    # Not a reviewer of every role, so the request is not among those bob may see.
    assert response.status_code == 404
    assert not Review.objects.exists()


def test_second_review_by_the_same_reviewer_is_409(api, requester, reviewer, prod_ssh, web1):
    made = pending_request(requester, web1)
    review(api(reviewer), made)

    response = review(api(reviewer), made, decision="deny", reason="not now")

    assert response.status_code == 409
    assert made.reviews.count() == 1
    made.refresh_from_db()
    assert made.state == AccessRequest.State.PENDING


@pytest.mark.parametrize("final", ["approved", "denied", "cancelled"])
def test_review_on_a_resolved_request_is_409(api, requester, reviewer, reviewer2, prod_ssh, web1, final):
    approver = make_user("frank", groups=("sre-leads",))
    made = pending_request(requester, web1)
    if final == "approved":
        services.request_review(request=made, reviewer=reviewer, decision="approve")
        services.request_review(request=made, reviewer=reviewer2, decision="approve")
    elif final == "denied":
        services.request_review(request=made, reviewer=reviewer, decision="deny", reason="not now")
    else:
        services.request_cancel(request=made, user=requester)

    response = review(api(approver), made, decision="deny", reason="not now")

    assert response.status_code == 409
    assert final in response.json()["detail"]
    made.refresh_from_db()
    assert made.state == final
    assert not made.reviews.filter(reviewer=approver).exists()


def test_review_after_the_pending_ttl_is_409_and_expires_the_request(api, requester, reviewer, prod_ssh, web1):
    made = pending_request(requester, web1)
    now = timezone.now()
    AccessRequest.objects.filter(pk=made.pk).update(
        created_at=now - timedelta(days=2), pending_expires_at=now - timedelta(seconds=1)
    )

    response = review(api(reviewer), made)

    assert response.status_code == 409
    made.refresh_from_db()
    assert made.state == AccessRequest.State.EXPIRED
    assert not made.reviews.exists()


@pytest.mark.parametrize(
    "body",
    [{"decision": "maybe"}, {"decision": ""}, {"decision": None}, {"decision": ["approve"]}, {}, {"reason": "ok"}],
)
def test_bad_decision_is_400(api, requester, reviewer, prod_ssh, web1, body):
    made = pending_request(requester, web1)

    response = api(reviewer).post(f"{REQUESTS}{made.pk}/reviews/", body)

    assert response.status_code == 400
    assert "decision" in response.json()
    assert not made.reviews.exists()


def test_review_reason_over_4096_characters_is_400(api, requester, reviewer, prod_ssh, web1):
    made = pending_request(requester, web1)

    response = review(api(reviewer), made, reason="x" * 4097)

    assert response.status_code == 400
    assert "reason" in response.json()
    assert not made.reviews.exists()


# --- cancel ---------------------------------------------------------------------------


def cancel(client, access_request, **body):
    return client.post(f"{REQUESTS}{access_request.pk}/cancel/", body)


def test_requester_cancels_a_pending_request(api, requester, prod_ssh, web1):
    made = pending_request(requester, web1)

    response = cancel(api(requester), made, reason="not needed any more")

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert response.json()["resolution_reason"] == "not needed any more"
    made.refresh_from_db()
    assert made.state == AccessRequest.State.CANCELLED
    assert AuditEvent.objects.filter(action="request.cancelled", actor_username="alice").count() == 1


@pytest.mark.parametrize(("who", "status"), [("bob", 403), ("erin", 403), ("mallory", 404), ("dave", 404)])
def test_only_the_requester_can_cancel(api, requester, reviewer, auditor, outsider, dave, prod_ssh, web1, who, status):
    made = pending_request(requester, web1)

    response = cancel(api(type(requester).objects.get(username=who)), made)

    assert response.status_code == status
    made.refresh_from_db()
    assert made.state == AccessRequest.State.PENDING


def test_second_cancel_is_409(api, requester, prod_ssh, web1):
    made = pending_request(requester, web1)
    client = api(requester)
    cancel(client, made)

    response = cancel(client, made)

    assert response.status_code == 409
    assert "cancelled" in response.json()["detail"]


def test_cancelling_an_approved_request_is_409_and_keeps_its_grants(
    api, requester, reviewer, reviewer2, prod_ssh, web1
):
    made = pending_request(requester, web1)
    services.request_review(request=made, reviewer=reviewer, decision="approve")
    services.request_review(request=made, reviewer=reviewer2, decision="approve")

    response = cancel(api(requester), made)

    assert response.status_code == 409
    made.refresh_from_db()
    assert made.state == AccessRequest.State.APPROVED


# --- wrong-typed bodies never crash -------------------------------------------------------

WRONG_BODIES = [
    None,
    0,
    1.5,
    "text",
    [],
    [1, 2],
    {"resources": None},
    {"resources": 5},
    {"resources": {"a": 1}},
    {"resources": [None]},
    {"resources": [{"id": 1}]},
    {"resources": [[1]]},
    {"resources": [1.5]},
    {"resources": [True]},
    {"resources": [-1]},
    {"resources": ["node/web-1"], "roles": None},
    {"resources": ["node/web-1"], "roles": [{"name": "prod-ssh"}]},
    {"resources": ["node/web-1"], "roles": [None]},
    {"resources": ["node/web-1"], "reason": None},
    {"resources": ["node/web-1"], "reason": {"text": "x"}},
    {"resources": ["node/web-1"], "reason": ["x"]},
    {"resources": ["node/web-1"], "reason": "x", "duration": {"h": 1}},
    {"resources": ["node/web-1"], "reason": "x", "duration": [60]},
    {"resources": ["node/web-1"], "reason": "x", "duration": 1e308},
    {"resources": ["node/web-1"], "reason": "x", "duration": 10**400},
    {"resources": ["node/web-1"], "reason": "x", "duration": "1h" * 1000},
    {"resources": ["node/web-1"], "reason": "x", "start_time": 5},
    {"resources": ["node/web-1"], "reason": "x", "start_time": {"at": "now"}},
    {"resources": ["node/web-1"], "reason": "x", "suggested_reviewers": None},
    {"resources": ["node/web-1"], "reason": "x", "suggested_reviewers": [{"u": "bob"}]},
    {"resources": ["node/web-1"], "reason": "x", "suggested_reviewers": [None]},
]


@pytest.mark.parametrize("body", WRONG_BODIES)
def test_wrong_typed_create_bodies_are_400(api, requester, reviewer, prod_ssh, web1, body):
    response = post_raw(api(requester), REQUESTS, body)

    assert response.status_code == 400, response.content
    assert response.json()
    assert not AccessRequest.objects.exists()


REVIEW_AND_CANCEL_BODIES = [
    None,
    5,
    "approve",
    ["approve"],
    {"decision": 1},
    {"decision": {"d": "approve"}},
    {"decision": True},
    {"decision": "approve", "reason": None},
    {"decision": "approve", "reason": {"r": 1}},
    {"decision": "approve", "reason": ["a"]},
]


@pytest.mark.parametrize("body", REVIEW_AND_CANCEL_BODIES)
def test_wrong_typed_review_bodies_are_400(api, requester, reviewer, prod_ssh, web1, body):
    made = pending_request(requester, web1)

    response = post_raw(api(reviewer), f"{REQUESTS}{made.pk}/reviews/", body)

    assert response.status_code == 400, response.content
    assert not made.reviews.exists()


@pytest.mark.parametrize("body", [None, 5, "text", ["x"], {"reason": None}, {"reason": {"r": 1}}, {"reason": [1]}])
def test_wrong_typed_cancel_bodies_never_crash_nor_cancel(api, requester, prod_ssh, web1, body):
    made = pending_request(requester, web1)

    response = post_raw(api(requester), f"{REQUESTS}{made.pk}/cancel/", body)

    assert response.status_code == 400, response.content
    made.refresh_from_db()
    assert made.state == AccessRequest.State.PENDING


def test_roles_listed_by_the_api_are_exactly_the_requestable_ones(api, requester, prod_ssh, web1):
    hidden = make_role("hidden", requestable_by=("nobody",))
    client = api(requester)
    listed = [r["name"] for r in client.get("/api/v1/roles/").json()["results"]]

    assert listed == ["prod-ssh"]
    assert client.post(REQUESTS, {"roles": listed, "reason": "x"}).status_code == 201
    assert client.post(REQUESTS, {"roles": [hidden.name], "reason": "x"}).status_code == 400


# --- eligibility at approval, expiry derived from the timestamps, denial reasons --------------


def test_approving_for_a_requester_who_left_the_group_is_409_naming_why(
    api, requester, reviewer, reviewer2, prod_ssh, web1
):
    made = pending_request(requester, web1)
    review(api(reviewer), made)
    requester.groups.clear()

    response = review(api(reviewer2), made)

    assert response.status_code == 409
    assert response.json() == {"detail": "alice may no longer request prod-ssh", "code": "conflict"}
    made.refresh_from_db()
    assert made.state == AccessRequest.State.PENDING
    assert not made.grants.exists()
    assert AuditEvent.objects.filter(action="review.refused_requester_ineligible", actor_username="carol").exists()


def test_approval_of_a_reviewer_who_left_is_not_counted(api, requester, reviewer, reviewer2, prod_ssh, web1):
    made = pending_request(requester, web1)
    review(api(reviewer), made)
    reviewer.groups.clear()

    response = review(api(reviewer2), made)

    assert response.status_code == 201
    assert response.json()["request_state"] == "pending"
    assert not made.grants.exists()


def past_its_ttl(made: AccessRequest) -> AccessRequest:
    now = timezone.now()
    AccessRequest.objects.filter(pk=made.pk).update(
        created_at=now - timedelta(days=2), pending_expires_at=now - timedelta(minutes=5)
    )
    made.refresh_from_db()
    return made


def test_a_request_past_its_ttl_reads_expired_before_the_sweep(api, requester, prod_ssh, web1):
    made = past_its_ttl(pending_request(requester, web1))
    assert made.state == AccessRequest.State.PENDING  # no sweep has run

    body = api(requester).get(f"{REQUESTS}{made.pk}/").json()

    assert body["state"] == "expired"
    assert body["resolved_at"] is not None
    assert body["resolution_reason"] == "pending time to live passed"
    listed = api(requester).get(REQUESTS, {"state": "pending"}).json()
    assert listed["count"] == 0
    expired = api(requester).get(REQUESTS, {"state": "expired"}).json()
    assert [r["id"] for r in expired["results"]] == [str(made.pk)]
    assert [r["state"] for r in api(requester).get(REQUESTS).json()["results"]] == ["expired"]


def test_cancel_after_the_ttl_is_409_and_records_the_expiry(api, requester, prod_ssh, web1):
    made = past_its_ttl(pending_request(requester, web1))

    response = api(requester).post(f"{REQUESTS}{made.pk}/cancel/")

    assert response.status_code == 409
    assert "expired" in response.json()["detail"]
    made.refresh_from_db()
    assert made.state == AccessRequest.State.EXPIRED
    assert AuditEvent.objects.filter(action="request.expired", target_id=str(made.pk)).count() == 1
    assert not AuditEvent.objects.filter(action="request.cancelled").exists()


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_denial_without_a_reason_is_400_naming_reason(api, requester, reviewer, prod_ssh, web1, reason):
    made = pending_request(requester, web1)

    response = review(api(reviewer), made, decision="deny", reason=reason)

    assert response.status_code == 400
    assert "reason" in response.json()
    assert not made.reviews.exists()


def test_a_denial_without_a_reason_field_is_400_naming_reason(api, requester, reviewer, prod_ssh, web1):
    made = pending_request(requester, web1)

    response = api(reviewer).post(f"{REQUESTS}{made.pk}/reviews/", {"decision": "deny"})

    assert response.status_code == 400
    assert "reason" in response.json()


def test_the_requester_reads_why_it_was_denied(api, requester, reviewer, prod_ssh, web1):
    made = pending_request(requester, web1)
    review(api(reviewer), made, decision="deny", reason="use the read replica")

    body = api(requester).get(f"{REQUESTS}{made.pk}/").json()

    assert body["state"] == "denied"
    assert body["resolution_reason"] == "use the read replica"


# --- the cost of a lifecycle --------------------------------------------------------


def _token_client(user):
    _, secret = ApiToken.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


@pytest.mark.parametrize(
    ("asked", "create"),
    [
        ({"roles": ["prod-ssh"]}, 8),
        # Resources cost their lookup and their one INSERT, however many.
        ({"resources": ["node/web-1"]}, 10),
        ({"resources": ["node/web-1", "node/web-2", "node/web-3"]}, 10),
    ],
    ids=["role", "one-resource", "three-resources"],
)
def test_a_lifecycle_over_the_api_costs_a_fixed_number_of_queries(
    requester, reviewer, reviewer2, prod_ssh, web1, web2, django_assert_num_queries, asked, create
):
    """Create and two approvals with tokens, each transaction's two statements included.

    Nothing the service has just written is read back for the answer, a
    review reads what it turns on in one statement, and neither grows with
    the resources asked for.
    """
    make_resource("web-3", labels={"env": "prod"})
    clients = [_token_client(user) for user in (requester, reviewer, reviewer2)]
    with django_assert_num_queries(create):
        created = clients[0].post(REQUESTS, {**asked, "reason": "INC-1"}, format="json")
    assert created.status_code == 201, created.content
    reviews = f"{REQUESTS}{created.json()['id']}/reviews/"
    with django_assert_num_queries(9):
        first = clients[1].post(reviews, {"decision": "approve"}, format="json")
    with django_assert_num_queries(15):
        second = clients[2].post(reviews, {"decision": "approve"}, format="json")

    assert (first.json()["request_state"], second.json()["request_state"]) == ("pending", "approved")
    made = AccessRequest.objects.get(pk=created.json()["id"])
    assert made.grants.count() == max(1, len(asked.get("resources", [])))


def test_the_201_answer_is_what_reading_the_request_back_gives(
    api, requester, reviewer, reviewer2, prod_ssh, web1, web2
):
    """The answer is built from what the service wrote, not read back: it must say exactly what a read says."""
    client = api(requester)
    created = client.post(
        REQUESTS,
        {
            "resources": ["node/web-2", web1.pk],
            "reason": "INC-1",
            "suggested_reviewers": ["carol", "bob"],
            "duration": "30m",
        },
    )
    assert created.status_code == 201, created.content

    read = client.get(f"{REQUESTS}{created.json()['id']}/")
    assert created.json() == read.json()
    assert [r["ref"] for r in read.json()["resources"]] == ["node/web-1", "node/web-2"]
