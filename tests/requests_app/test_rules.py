"""Each access rule has one definition: the queryset method and the predicate for one object agree.

A rule written as a filter (``in_state``, ``honoured``, ``reviewable_by``,
``reviewers_of``) and as a check of one object (``state_at``,
``grant_refusal``, ``review_refusal``) must never drift apart; these tests put
the same rows through both.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.selectors import reviewers_of
from audit.models import AuditEvent
from requests_app.models import AccessRequest, Grant
from requests_app.notifications.outbox import _reviewer_emails
from requests_app.services import request_create, request_review, review_refusal
from tests.conftest import make_role, make_user
from tests.requests_app.portal import approved_request


@pytest.fixture
def grants_in_every_state(requester, reviewer, reviewer2, prod_ssh, web1, web2):
    """Four grants of alice's: active, scheduled, expired and revoked, as of now."""
    now = timezone.now()
    access_request = approved_request(
        requester=requester, reviewers=[reviewer, reviewer2], role=prod_ssh, resources=[web1, web2]
    )
    active, other = access_request.grants.order_by("pk")
    scheduled = Grant.objects.create(
        request=access_request,
        user=requester,
        role=prod_ssh,
        resource=web1,
        starts_at=now + timedelta(hours=1),
        expires_at=now + timedelta(hours=2),
    )
    expired = other
    Grant.objects.filter(pk=expired.pk).update(starts_at=now - timedelta(hours=2), expires_at=now - timedelta(hours=1))
    revoked = Grant.objects.create(
        request=access_request,
        user=requester,
        role=prod_ssh,
        resource=web2,
        starts_at=now - timedelta(minutes=5),
        expires_at=now + timedelta(minutes=5),
        revoked_at=now - timedelta(minutes=1),
    )
    return {"active": active, "scheduled": scheduled, "expired": expired, "revoked": revoked}


def test_grant_in_state_filters_exactly_the_grants_whose_state_at_says_so(grants_in_every_state):
    at = timezone.now()
    grants = list(Grant.objects.all())
    assert {g.state_at(at) for g in grants} == set(Grant.State.values)
    for state in Grant.State.values:
        expected = {g.pk for g in grants if g.state_at(at) == state}
        assert set(Grant.objects.in_state(state, at=at).values_list("pk", flat=True)) == expected, state
    assert set(Grant.objects.active(at=at).values_list("pk", flat=True)) == {grants_in_every_state["active"].pk}
    assert not Grant.objects.in_state("no-such-state", at=at).exists()


def test_grant_state_filters_of_admin_and_api_use_in_state(client, auditor, grants_in_every_state):
    """The admin's state filter offers every state, scheduled and revoked included, and the API's
    ``active`` is the same set as ``in_state("active")``."""
    client.force_login(auditor)
    for state, grant in grants_in_every_state.items():
        page = client.get("/admin/requests_app/grant/", {"state": state})
        assert page.status_code == 200
        assert list(page.context["cl"].result_list) == [grant], state
    api = client.get("/api/v1/grants/", {"active": "true"})
    assert [g["id"] for g in api.json()["results"]] == [grants_in_every_state["active"].pk]
    ended = client.get("/api/v1/grants/", {"active": "false"})
    assert {g["id"] for g in ended.json()["results"]} == {
        grants_in_every_state[k].pk for k in ("scheduled", "expired", "revoked")
    }


def test_reviewer_emails_are_the_reviewers_of_the_roles_minus_the_requester(requester, prod_ssh):
    """Who is mailed about a new request is ``reviewers_of`` its roles: active, in a reviewer group of
    every role, never the requester, only those with an address."""
    web_ssh = make_role("web-ssh", reviewers=("web-leads",))
    dana = make_user("dana", groups=("engineers", "sre-leads", "web-leads"))
    make_user("erik", groups=("web-leads",))
    make_user("fay", groups=("sre-leads", "web-leads"), is_active=False)
    gus = make_user("gus", groups=("sre-leads", "web-leads"))
    gus.email = ""
    gus.save(update_fields=["email"])
    access_request = request_create(requester=dana, roles=[prod_ssh, web_ssh], reason="INC-1")
    assert _reviewer_emails(access_request) == []

    hal = make_user("hal", groups=("sre-leads", "web-leads"))
    assert _reviewer_emails(access_request) == [hal.email]
    expected = reviewers_of([prod_ssh, web_ssh]).exclude(pk=dana.pk).exclude(email="")
    assert _reviewer_emails(access_request) == sorted(u.email for u in expected)


@pytest.mark.parametrize("case", ["self", "ineligible", "not_pending", "already_reviewed", None])
def test_review_refusal_is_what_the_review_service_refuses_with(case, requester, reviewer, reviewer2, prod_ssh, web1):
    dana = make_user("dana", groups=("engineers", "sre-leads"))
    access_request = request_create(requester=requester, resources=[web1], reason="INC-1")
    reviewing = reviewer
    if case == "self":
        access_request = request_create(requester=dana, resources=[web1], reason="INC-1")
        reviewing = dana
    elif case == "ineligible":
        reviewing = make_user("erik", groups=("engineers",))
    elif case == "not_pending":
        request_review(request=access_request, reviewer=reviewer2, decision="deny", reason="no")
    elif case == "already_reviewed":
        request_review(request=access_request, reviewer=reviewer, decision="approve")

    refusal = review_refusal(access_request, reviewing, at=timezone.now())
    if case is None:
        assert refusal is None
        assert request_review(request=access_request, reviewer=reviewing, decision="approve").pk
        return
    assert refusal.code == case
    before = AuditEvent.objects.count()
    with pytest.raises(type(refusal.error)) as raised:
        request_review(request=access_request, reviewer=reviewing, decision="approve")
    assert raised.value.message == refusal.message
    # Refusals of who may review are audited; those of the request's state are not.
    audited = AuditEvent.objects.order_by("-pk").first()
    assert (AuditEvent.objects.count() > before) == (refusal.audit_action is not None)
    if refusal.audit_action:
        assert audited.action == refusal.audit_action


def test_requests_a_user_may_review_and_users_who_may_review_are_one_rule(requester, prod_ssh, web1, db1):
    """``AccessRequestQuerySet.reviewable_by`` (from the reviewer's side) and ``reviewers_of`` (from the
    roles' side) pick the same pairs: active, in a reviewer group of every role, never one's own request."""
    db_role = make_role("prod-db", resource_kinds=["db"], reviewers=("dba",))
    users = [
        make_user("bob", groups=("sre-leads",)),
        make_user("dora", groups=("dba",)),
        make_user("dave", groups=("sre-leads", "dba", "engineers")),
        make_user("fay", groups=("sre-leads", "dba"), is_active=False),
        make_user("mallory"),
    ]
    dave = users[2]
    requests = [
        request_create(requester=requester, resources=[web1], reason="INC-1"),
        request_create(requester=requester, resources=[db1], roles=[db_role], reason="INC-2"),
        request_create(requester=requester, resources=[web1, db1], roles=[prod_ssh, db_role], reason="INC-3"),
        request_create(requester=dave, resources=[web1], reason="INC-4"),
    ]
    pairs = 0
    for user in users:
        reviewable = set(AccessRequest.objects.reviewable_by(user).values_list("pk", flat=True))
        for access_request in requests:
            may = reviewers_of(list(access_request.roles.all())).filter(pk=user.pk).exists()
            may = may and access_request.requester_id != user.pk
            assert (access_request.pk in reviewable) == may, (user.username, access_request.reason)
            pairs += may
    assert pairs == 6  # bob: 1 and 4; dora: 2; dave: 1, 2 and 3, not his own 4
