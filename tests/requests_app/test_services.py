"""The request lifecycle, proved through the service functions.

Every rule of DESIGN.md's state machine is exercised here once; the API, the
admin and the CLI only call these functions.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from accounts.scope import role_scope_sync
from audit.models import AuditEvent
from inventory.models import Resource
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from requests_app.models import AccessRequest, Grant, Review
from requests_app.services import (
    access_check,
    grant_revoke,
    request_cancel,
    request_create,
    request_expire_pending,
    request_review,
    reviewer_is_eligible,
)
from tests.conftest import audit_sealed_verify, make_resource, make_role, make_user

pytestmark = pytest.mark.django_db

State = AccessRequest.State


@pytest.fixture
def ops(db):
    """A role-based role needing one approval, reviewed by sre-leads."""
    return make_role("prod-ops", approvals=1, denials=1)


def events(action: str):
    return AuditEvent.objects.filter(action=action).order_by("id")


def refreshed(req: AccessRequest) -> AccessRequest:
    req.refresh_from_db()
    return req


def make_request_in(state: str, *, requester, reviewer, revoker, role) -> AccessRequest:
    """A role-based request for ``role`` (one approval, one denial) driven to ``state``."""
    req = request_create(requester=requester, roles=[role], reason="INC-7")
    if state == State.APPROVED:
        request_review(request=req, reviewer=reviewer, decision="approve")
    elif state == State.DENIED:
        request_review(request=req, reviewer=reviewer, decision="deny", reason="not now")
    elif state == State.CANCELLED:
        request_cancel(request=req, user=requester)
    elif state == State.EXPIRED:
        assert request_expire_pending(now=timezone.now() + timedelta(days=2)) == 1
    elif state == State.REVOKED:
        request_review(request=req, reviewer=reviewer, decision="approve")
        for grant in req.grants.all():
            grant_revoke(grant=grant, by=revoker, reason="incident over")
    req = refreshed(req)
    assert req.state == state
    return req


# --- allowed transitions ------------------------------------------------------


def test_new_request_is_pending_and_audited(requester, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1], reason="INC-1")
    assert refreshed(req).state == State.PENDING
    assert not req.grants.exists()
    event = events("request.created").get()
    assert event.actor == requester
    assert event.target_id == str(req.pk)
    assert event.data["roles"] == ["prod-ssh"]
    assert event.data["resources"] == ["node/web-1"]


def test_request_stays_pending_until_the_approval_threshold_is_met(requester, reviewer, reviewer2, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1], reason="INC-1")
    request_review(request=req, reviewer=reviewer, decision="approve")
    assert refreshed(req).state == State.PENDING
    assert not Grant.objects.exists()
    request_review(request=req, reviewer=reviewer2, decision="approve")
    req = refreshed(req)
    assert req.state == State.APPROVED
    assert req.resolved_at is not None
    assert req.grants.count() == 1


def test_denial_threshold_denies_the_request(requester, reviewer, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1], reason="INC-1")
    request_review(request=req, reviewer=reviewer, decision="deny", reason="not during the freeze")
    req = refreshed(req)
    assert req.state == State.DENIED
    assert req.resolution_reason == "not during the freeze"
    assert not req.grants.exists()


def test_a_denial_after_an_approval_below_threshold_denies(requester, reviewer, reviewer2, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1], reason="INC-1")
    request_review(request=req, reviewer=reviewer, decision="approve")
    request_review(request=req, reviewer=reviewer2, decision="deny", reason="not now")
    assert refreshed(req).state == State.DENIED
    assert not Grant.objects.exists()


def test_late_approval_never_overturns_a_denial(requester, reviewer, reviewer2, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1], reason="INC-1")
    request_review(request=req, reviewer=reviewer, decision="approve")
    request_review(request=req, reviewer=reviewer2, decision="deny", reason="not now")
    third = make_user("dave", groups=("sre-leads",))
    with pytest.raises(StateConflict):
        request_review(request=req, reviewer=third, decision="approve")
    assert refreshed(req).state == State.DENIED
    assert not Grant.objects.exists()
    assert not Review.objects.filter(reviewer=third).exists()


def test_requester_cancels_a_pending_request(requester, ops):
    req = request_create(requester=requester, roles=[ops])
    request_cancel(request=req, user=requester, reason="fixed it myself")
    req = refreshed(req)
    assert req.state == State.CANCELLED
    assert req.resolution_reason == "fixed it myself"
    event = events("request.cancelled").get()
    assert event.actor == requester


def test_cancel_without_reason_records_a_default_resolution(requester, ops):
    req = request_create(requester=requester, roles=[ops])
    request_cancel(request=req, user=requester)
    assert refreshed(req).resolution_reason == "cancelled by the requester"


def test_approved_request_is_revoked_by_a_revoker(requester, reviewer, revoker, ops):
    req = make_request_in(State.APPROVED, requester=requester, reviewer=reviewer, revoker=revoker, role=ops)
    grant = req.grants.get()
    grant_revoke(grant=grant, by=revoker, reason="incident over")
    grant.refresh_from_db()
    assert grant.revoked_at is not None
    assert grant.revoked_by == revoker
    assert grant.revoke_reason == "incident over"
    assert grant.state == Grant.State.REVOKED
    assert refreshed(req).state == State.REVOKED


# --- refused transitions ------------------------------------------------------

NOT_PENDING = [State.APPROVED, State.DENIED, State.CANCELLED, State.EXPIRED, State.REVOKED]


@pytest.mark.parametrize("state", NOT_PENDING)
@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_review_is_refused_unless_pending(state, decision, requester, reviewer, reviewer2, revoker, ops):
    req = make_request_in(state, requester=requester, reviewer=reviewer, revoker=revoker, role=ops)
    grants_before = Grant.objects.count()
    with pytest.raises(StateConflict, match=str(state)):
        request_review(request=req, reviewer=reviewer2, decision=decision, reason="checked")
    assert refreshed(req).state == state
    assert Grant.objects.count() == grants_before
    assert not Review.objects.filter(reviewer=reviewer2).exists()


@pytest.mark.parametrize("state", NOT_PENDING)
def test_cancel_is_refused_unless_pending(state, requester, reviewer, revoker, ops):
    req = make_request_in(state, requester=requester, reviewer=reviewer, revoker=revoker, role=ops)
    with pytest.raises(StateConflict, match=str(state)):
        request_cancel(request=req, user=requester)
    assert refreshed(req).state == state


def test_revoking_an_already_revoked_grant_is_refused(requester, reviewer, revoker, ops):
    req = make_request_in(State.REVOKED, requester=requester, reviewer=reviewer, revoker=revoker, role=ops)
    grant = req.grants.get()
    revoked_at = grant.revoked_at
    with pytest.raises(StateConflict, match="already revoked"):
        grant_revoke(grant=grant, by=revoker, reason="again")
    grant.refresh_from_db()
    assert grant.revoked_at == revoked_at
    assert grant.revoke_reason == "incident over"
    assert events("grant.revoked").count() == 1


def test_revoking_an_ended_grant_is_refused(requester, reviewer, revoker, ops):
    req = make_request_in(State.APPROVED, requester=requester, reviewer=reviewer, revoker=revoker, role=ops)
    grant = req.grants.get()
    with pytest.raises(StateConflict, match="ended"):
        grant_revoke(grant=grant, by=revoker, reason="late", now=grant.expires_at + timedelta(seconds=1))
    grant.refresh_from_db()
    assert grant.revoked_at is None
    assert refreshed(req).state == State.APPROVED


# --- thresholds across several roles ------------------------------------------


@pytest.fixture
def two_roles(db):
    """Role ``a`` is easy to approve and hard to deny, ``b`` the reverse."""
    a = make_role("role-a", approvals=1, denials=3, resource_labels={"env": ["prod"]})
    b = make_role("role-b", approvals=3, denials=2, resource_labels={"team": ["web"]})
    return a, b


@pytest.fixture
def leads(db):
    return [make_user(f"lead{i}", groups=("sre-leads",)) for i in range(3)]


def test_thresholds_are_the_largest_approvals_and_the_smallest_denials(requester, two_roles):
    req = request_create(requester=requester, roles=list(two_roles))
    assert (req.approvals_required, req.denials_required) == (3, 2)


def test_multi_role_request_needs_the_largest_approval_count(requester, two_roles, leads):
    req = request_create(requester=requester, roles=list(two_roles))
    for lead in leads[:2]:
        request_review(request=req, reviewer=lead, decision="approve")
        assert refreshed(req).state == State.PENDING
    request_review(request=req, reviewer=leads[2], decision="approve")
    assert refreshed(req).state == State.APPROVED
    assert sorted(req.grants.values_list("role__name", flat=True)) == ["role-a", "role-b"]


def test_multi_role_request_is_denied_at_the_smallest_denial_count(requester, two_roles, leads):
    req = request_create(requester=requester, roles=list(two_roles))
    request_review(request=req, reviewer=leads[0], decision="deny", reason="not now")
    assert refreshed(req).state == State.PENDING
    request_review(request=req, reviewer=leads[1], decision="deny", reason="not now")
    assert refreshed(req).state == State.DENIED


def test_thresholds_are_fixed_when_the_request_is_made(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops])
    ops.approvals = 5
    ops.save()
    request_review(request=req, reviewer=reviewer, decision="approve")
    assert refreshed(req).state == State.APPROVED


# --- grants ---------------------------------------------------------------------


def test_grants_are_created_exactly_once_on_approval(requester, reviewer, reviewer2, prod_ssh, web1, web2):
    req = request_create(requester=requester, resources=[web1, web2], reason="INC-1")
    request_review(request=req, reviewer=reviewer, decision="approve")
    request_review(request=req, reviewer=reviewer2, decision="approve")
    assert Grant.objects.count() == 2
    third = make_user("dave", groups=("sre-leads",))
    with pytest.raises(StateConflict):
        request_review(request=req, reviewer=third, decision="approve")
    assert Grant.objects.count() == 2
    approved = events("request.approved").get()
    assert sorted(approved.data["grants"]) == sorted(Grant.objects.values_list("pk", flat=True))


def test_one_grant_per_named_resource_with_the_role_that_matches_it(requester, reviewer, web1, dev1):
    prod = make_role("prod-ssh", resource_labels={"env": ["prod"]})
    dev = make_role("dev-ssh", resource_labels={"env": ["dev"]}, logins=["dev"])
    req = request_create(requester=requester, resources=[web1, dev1], roles=[prod, dev])
    request_review(request=req, reviewer=reviewer, decision="approve")
    grants = {g.resource.name: g.role.name for g in req.grants.select_related("resource", "role")}
    assert grants == {"web-1": "prod-ssh", "dev-1": "dev-ssh"}


def test_role_based_request_gets_one_grant_per_role(requester, reviewer, web1):
    a = make_role("role-a")
    b = make_role("role-b", resource_kinds=["db"])
    req = request_create(requester=requester, roles=[a, b])
    request_review(request=req, reviewer=reviewer, decision="approve")
    grants = list(req.grants.order_by("role__name"))
    assert [(g.role.name, g.resource_id) for g in grants] == [("role-a", None), ("role-b", None)]
    assert all(g.user == requester for g in grants)


def test_grant_window_starts_at_approval_when_no_start_time(requester, reviewer, ops):
    created = timezone.now()
    req = request_create(requester=requester, roles=[ops], duration="30m", now=created)
    approved_at = created + timedelta(minutes=10)
    request_review(request=req, reviewer=reviewer, decision="approve", now=approved_at)
    grant = req.grants.get()
    assert grant.starts_at == approved_at
    assert grant.expires_at == approved_at + timedelta(minutes=30)


def test_grant_window_starts_at_the_start_time_when_approved_before_it(requester, reviewer, ops):
    created = timezone.now()
    start = created + timedelta(hours=3)
    req = request_create(requester=requester, roles=[ops], duration="45m", start_time=start, now=created)
    request_review(request=req, reviewer=reviewer, decision="approve", now=created + timedelta(minutes=5))
    grant = req.grants.get()
    assert grant.starts_at == start
    assert grant.expires_at == start + timedelta(minutes=45)


def test_grant_window_starts_at_approval_when_the_start_time_has_passed(requester, reviewer, ops):
    created = timezone.now()
    start = created + timedelta(hours=1)
    req = request_create(requester=requester, roles=[ops], duration="45m", start_time=start, now=created)
    approved_at = start + timedelta(hours=2)
    request_review(request=req, reviewer=reviewer, decision="approve", now=approved_at)
    grant = req.grants.get()
    assert grant.starts_at == approved_at
    assert grant.expires_at == approved_at + timedelta(minutes=45)


def test_grant_never_outlasts_a_max_duration_lowered_before_approval(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops], duration="1h")
    ops.max_duration = timedelta(minutes=20)
    ops.save()
    request_review(request=req, reviewer=reviewer, decision="approve")
    grant = req.grants.get()
    assert grant.expires_at - grant.starts_at == timedelta(minutes=20)


# --- reviewers --------------------------------------------------------------------


def test_requester_cannot_approve_own_request(requester, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1], reason="INC-1")
    with pytest.raises(PermissionRefused, match="own request"):
        request_review(request=req, reviewer=requester, decision="approve")
    assert not Review.objects.exists()
    assert refreshed(req).state == State.PENDING


def test_requester_cannot_review_own_request_even_as_an_eligible_reviewer(requester, ops):
    requester.groups.add(Group.objects.get(name="sre-leads"))
    assert reviewer_is_eligible(reviewer=requester, roles=[ops])
    req = request_create(requester=requester, roles=[ops])
    for decision in ("approve", "deny"):
        with pytest.raises(PermissionRefused, match="own request"):
            request_review(request=req, reviewer=requester, decision=decision, reason="checked")
    assert refreshed(req).state == State.PENDING
    assert not Review.objects.exists()
    refused = list(events("review.refused_self"))
    assert len(refused) == 2
    assert refused[0].actor == requester
    assert refused[0].target_id == str(req.pk)
    assert not events("review.created").exists()
    assert audit_sealed_verify().ok


def test_reviewer_must_be_in_a_reviewer_group_of_every_role(requester, reviewer, web1):
    prod = make_role("prod-ssh", resource_labels={"env": ["prod"]}, reviewers=("sre-leads",))
    db = make_role("prod-db", resource_kinds=["db"], reviewers=("dba",))
    req = request_create(requester=requester, roles=[prod, db])
    with pytest.raises(PermissionRefused, match="every role"):
        request_review(request=req, reviewer=reviewer, decision="approve")
    assert refreshed(req).state == State.PENDING
    assert not Review.objects.exists()
    event = events("review.refused_ineligible").get()
    assert event.actor == reviewer
    assert event.data["decision"] == "approve"
    assert audit_sealed_verify().ok

    both = make_user("erin", groups=("sre-leads", "dba"))
    request_review(request=req, reviewer=both, decision="approve")
    assert refreshed(req).state == State.APPROVED


def test_outsider_cannot_review(requester, outsider, ops):
    req = request_create(requester=requester, roles=[ops])
    with pytest.raises(PermissionRefused):
        request_review(request=req, reviewer=outsider, decision="deny", reason="not now")
    assert refreshed(req).state == State.PENDING
    assert events("review.refused_ineligible").get().actor == outsider


def test_being_able_to_request_a_role_does_not_make_you_its_reviewer(requester, ops):
    colleague = make_user("frank", groups=("engineers",))
    req = request_create(requester=requester, roles=[ops])
    with pytest.raises(PermissionRefused):
        request_review(request=req, reviewer=colleague, decision="approve")


def test_staff_review_only_where_a_role_makes_them_eligible(requester, staff, ops):
    root = make_user("root", is_staff=True, is_superuser=True)
    req = request_create(requester=requester, roles=[ops])
    for user in (staff, root):
        with pytest.raises(PermissionRefused):
            request_review(request=req, reviewer=user, decision="approve")
    assert refreshed(req).state == State.PENDING


def test_inactive_reviewer_is_refused(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops])
    reviewer.is_active = False
    reviewer.save()
    with pytest.raises(PermissionRefused):
        request_review(request=req, reviewer=reviewer, decision="approve")
    assert refreshed(req).state == State.PENDING
    assert events("review.refused_ineligible").exists()


def test_reviewer_cannot_review_twice(requester, reviewer, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1], reason="INC-1")
    request_review(request=req, reviewer=reviewer, decision="approve")
    with pytest.raises(StateConflict, match="already reviewed"):
        request_review(request=req, reviewer=reviewer, decision="approve")
    with pytest.raises(StateConflict, match="already reviewed"):
        request_review(request=req, reviewer=reviewer, decision="deny", reason="not now")
    assert Review.objects.filter(reviewer=reviewer).count() == 1
    assert refreshed(req).state == State.PENDING


def test_unknown_decision_is_refused(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops])
    with pytest.raises(DomainError) as exc:
        request_review(request=req, reviewer=reviewer, decision="maybe")
    assert exc.value.field == "decision"
    assert not Review.objects.exists()


def test_review_reason_longer_than_4096_characters_is_refused(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops])
    with pytest.raises(DomainError) as exc:
        request_review(request=req, reviewer=reviewer, decision="approve", reason="x" * 4097)
    assert exc.value.field == "reason"
    assert refreshed(req).state == State.PENDING


# --- cancel -------------------------------------------------------------------------


def test_only_the_requester_can_cancel(requester, reviewer, staff, outsider, ops):
    req = request_create(requester=requester, roles=[ops])
    for user in (reviewer, staff, outsider):
        with pytest.raises(PermissionRefused, match="requester"):
            request_cancel(request=req, user=user)
    assert refreshed(req).state == State.PENDING
    assert not events("request.cancelled").exists()


# --- pending expiry -------------------------------------------------------------------


def test_expire_pending_expires_only_due_pending_requests(requester, reviewer, ops):
    now = timezone.now()
    short = make_role("short-ttl", pending_ttl=timedelta(minutes=5))
    due = request_create(requester=requester, roles=[short], now=now)
    not_due = request_create(requester=requester, roles=[ops], now=now)
    approved = request_create(requester=requester, roles=[short], now=now)
    request_review(request=approved, reviewer=reviewer, decision="approve", now=now + timedelta(minutes=1))

    assert request_expire_pending(now=now + timedelta(minutes=4)) == 0
    assert request_expire_pending(now=now + timedelta(minutes=6)) == 1
    due = refreshed(due)
    assert due.state == State.EXPIRED
    assert due.resolved_at == now + timedelta(minutes=6)
    assert refreshed(not_due).state == State.PENDING
    assert refreshed(approved).state == State.APPROVED
    event = events("request.expired").get()
    assert event.target_id == str(due.pk)
    assert event.actor is None
    # A second sweep finds nothing more to do.
    assert request_expire_pending(now=now + timedelta(minutes=6)) == 0


def test_pending_expiry_is_the_shortest_pending_ttl_of_the_roles(requester):
    now = timezone.now()
    a = make_role("a", pending_ttl=timedelta(hours=2))
    b = make_role("b", pending_ttl=timedelta(hours=8))
    req = request_create(requester=requester, roles=[a, b], now=now)
    assert req.pending_expires_at == now + timedelta(hours=2)


def test_reviewing_past_pending_expiry_marks_the_request_expired(requester, reviewer, ops):
    now = timezone.now()
    req = request_create(requester=requester, roles=[ops], now=now)
    with pytest.raises(StateConflict, match="expired"):
        request_review(request=req, reviewer=reviewer, decision="approve", now=now + timedelta(hours=25))
    assert req.state == State.EXPIRED
    req = refreshed(req)
    assert req.state == State.EXPIRED
    assert not Review.objects.exists()
    assert not Grant.objects.exists()
    assert events("request.expired").count() == 1
    with pytest.raises(StateConflict):
        request_review(request=req, reviewer=reviewer, decision="approve", now=now + timedelta(hours=26))


# --- durations and caps ------------------------------------------------------------------


def test_default_duration_is_one_hour_when_the_cap_allows(requester):
    role = make_role("long", max_duration=timedelta(hours=8))
    assert request_create(requester=requester, roles=[role]).duration == timedelta(hours=1)


def test_default_duration_is_the_cap_when_shorter_than_one_hour(requester):
    role = make_role("short", max_duration=timedelta(minutes=15))
    assert request_create(requester=requester, roles=[role]).duration == timedelta(minutes=15)


def test_duration_above_the_cap_is_refused_naming_the_cap(requester):
    role = make_role("capped", max_duration=timedelta(minutes=30))
    with pytest.raises(DomainError) as exc:
        request_create(requester=requester, roles=[role], duration="45m")
    assert exc.value.field == "duration"
    assert "30m" in exc.value.message
    assert "capped" in exc.value.message
    assert not AccessRequest.objects.exists()


def test_the_cap_of_a_multi_role_request_is_the_smallest(requester):
    a = make_role("a", max_duration=timedelta(hours=4))
    b = make_role("b", max_duration=timedelta(hours=2))
    with pytest.raises(DomainError, match="2h") as exc:
        request_create(requester=requester, roles=[a, b], duration="3h")
    assert exc.value.field == "duration"
    assert request_create(requester=requester, roles=[a, b], duration="2h").duration == timedelta(hours=2)


@pytest.mark.parametrize("duration", [0, -5, "0", "-60", "abc", "1x", True, "1ms", 10**400])
def test_zero_negative_or_garbage_duration_is_refused(requester, ops, duration):
    with pytest.raises(DomainError) as exc:
        request_create(requester=requester, roles=[ops], duration=duration)
    assert exc.value.field == "duration"
    assert not AccessRequest.objects.exists()


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        (1800, timedelta(minutes=30)),
        ("1800", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        (timedelta(hours=2), timedelta(hours=2)),
    ],
)
def test_duration_accepts_seconds_and_go_style_strings(requester, duration, expected):
    role = make_role("two-hours", max_duration=timedelta(hours=2))
    assert request_create(requester=requester, roles=[role], duration=duration).duration == expected


# --- start times ---------------------------------------------------------------------------


def test_start_time_in_the_past_is_refused(requester, ops):
    with pytest.raises(DomainError, match="past") as exc:
        request_create(requester=requester, roles=[ops], start_time=timezone.now() - timedelta(minutes=5))
    assert exc.value.field == "start_time"


def test_start_time_more_than_seven_days_ahead_is_refused(requester, ops):
    now = timezone.now()
    with pytest.raises(DomainError) as exc:
        request_create(requester=requester, roles=[ops], start_time=now + timedelta(days=7, minutes=1), now=now)
    assert exc.value.field == "start_time"
    req = request_create(requester=requester, roles=[ops], start_time=now + timedelta(days=7), now=now)
    assert req.start_time == now + timedelta(days=7)


def test_naive_start_time_is_refused(requester, ops):
    naive = datetime.now() + timedelta(hours=1)
    with pytest.raises(DomainError, match="time zone") as exc:
        request_create(requester=requester, roles=[ops], start_time=naive)
    assert exc.value.field == "start_time"


def test_future_start_gives_a_scheduled_grant_that_opens_at_its_start(requester, reviewer, ops, web1):
    now = timezone.now()
    start = now + timedelta(hours=2)
    req = request_create(requester=requester, roles=[ops], start_time=start, duration="30m", now=now)
    request_review(request=req, reviewer=reviewer, decision="approve", now=now)
    grant = req.grants.get()
    assert grant.starts_at == start
    assert grant.state == Grant.State.SCHEDULED
    assert not access_check(user=requester, resource=web1, login="ubuntu", at=now).allowed
    assert not access_check(user=requester, resource=web1, login="ubuntu", at=start - timedelta(seconds=1)).allowed
    assert access_check(user=requester, resource=web1, login="ubuntu", at=start).allowed
    assert access_check(user=requester, resource=web1, login="ubuntu", at=start + timedelta(minutes=29)).allowed
    assert not access_check(user=requester, resource=web1, login="ubuntu", at=start + timedelta(minutes=30)).allowed


def test_start_time_in_another_time_zone_is_accepted(requester, ops):
    start = (timezone.now() + timedelta(hours=1)).astimezone(dt_timezone(timedelta(hours=-5)))
    req = request_create(requester=requester, roles=[ops], start_time=start)
    assert refreshed(req).start_time == start


# --- reasons --------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_reason_required_by_a_role_is_refused_with_the_hint(requester, prod_ssh, web1, reason):
    with pytest.raises(DomainError) as exc:
        request_create(requester=requester, resources=[web1], reason=reason)
    assert exc.value.field == "reason"
    assert "prod-ssh" in exc.value.message
    assert "link the ticket" in exc.value.message
    assert not AccessRequest.objects.exists()


def test_reason_is_optional_when_no_role_requires_it(requester, ops):
    assert request_create(requester=requester, roles=[ops]).reason == ""


def test_reason_longer_than_4096_characters_is_refused(requester, ops):
    with pytest.raises(DomainError, match="4096") as exc:
        request_create(requester=requester, roles=[ops], reason="x" * 4097)
    assert exc.value.field == "reason"
    assert request_create(requester=requester, roles=[ops], reason="x" * 4096).reason == "x" * 4096


def test_reason_that_is_not_text_is_refused(requester, ops):
    with pytest.raises(DomainError) as exc:
        request_create(requester=requester, roles=[ops], reason=["INC-1"])
    assert exc.value.field == "reason"


# --- auto-approve ----------------------------------------------------------------------------


def test_auto_approve_role_is_approved_at_once_with_grants_and_audited(requester, web1):
    role = make_role("self-service", auto_approve=True, approvals=2)
    req = request_create(requester=requester, roles=[role])
    req = refreshed(req)
    assert req.state == State.APPROVED
    assert req.grants.count() == 1
    assert access_check(user=requester, resource=web1, login="ubuntu").allowed
    event = events("request.approved").get()
    assert event.data["auto"] is True
    assert event.actor == requester
    assert not Review.objects.exists()
    assert audit_sealed_verify().ok


def test_auto_approve_mixed_with_a_reviewed_role_stays_pending(requester):
    auto = make_role("self-service", auto_approve=True)
    reviewed = make_role("reviewed")
    req = request_create(requester=requester, roles=[auto, reviewed])
    assert refreshed(req).state == State.PENDING
    assert not Grant.objects.exists()
    assert not events("request.approved").exists()


def test_reviewed_approval_is_audited_as_not_automatic(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops])
    request_review(request=req, reviewer=reviewer, decision="approve")
    event = events("request.approved").get()
    assert event.data["auto"] is False
    assert event.actor == reviewer


# --- picking roles for resources ----------------------------------------------------------------


def test_the_one_matching_requestable_role_is_picked(requester, prod_ssh, web1, web2):
    make_role("not-mine", requestable_by=("others",))
    req = request_create(requester=requester, resources=[web1, web2], reason="INC-1")
    assert list(req.roles.all()) == [prod_ssh]
    assert set(req.resources.all()) == {web1, web2}


def test_roles_picked_per_resource_are_their_union(requester, web1, dev1):
    prod = make_role("prod-ssh", resource_labels={"env": ["prod"]})
    dev = make_role("dev-ssh", resource_labels={"env": ["dev"]})
    req = request_create(requester=requester, resources=[web1, dev1])
    assert set(req.roles.all()) == {prod, dev}


def test_resource_with_no_requestable_role_is_refused_by_name(requester, prod_ssh, web1, dev1):
    with pytest.raises(DomainError, match="node/dev-1") as exc:
        request_create(requester=requester, resources=[web1, dev1], reason="INC-1")
    assert exc.value.field == "resources"
    assert not AccessRequest.objects.exists()


def test_resource_matched_by_several_roles_is_refused_listing_them(requester, prod_ssh, web1):
    make_role("web-team", resource_labels={"team": ["web"]})
    with pytest.raises(DomainError) as exc:
        request_create(requester=requester, resources=[web1], reason="INC-1")
    assert exc.value.field == "roles"
    assert "node/web-1" in exc.value.message
    assert "prod-ssh" in exc.value.message and "web-team" in exc.value.message
    assert not AccessRequest.objects.exists()


def test_naming_a_role_settles_a_resource_matched_by_several(requester, prod_ssh, web1):
    web_team = make_role("web-team", resource_labels={"team": ["web"]})
    req = request_create(requester=requester, resources=[web1], roles=[web_team])
    assert list(req.roles.all()) == [web_team]


def test_named_roles_that_do_not_reach_a_resource_are_refused(requester, prod_ssh, web1, dev1):
    with pytest.raises(DomainError, match="node/dev-1") as exc:
        request_create(requester=requester, resources=[web1, dev1], roles=[prod_ssh], reason="INC-1")
    assert exc.value.field == "resources"


def test_named_role_that_matches_none_of_the_resources_is_refused(requester, prod_ssh, web1):
    dev = make_role("dev-ssh", resource_labels={"env": ["dev"]})
    with pytest.raises(DomainError, match="dev-ssh") as exc:
        request_create(requester=requester, resources=[web1], roles=[prod_ssh, dev], reason="INC-1")
    assert exc.value.field == "roles"


def test_role_the_user_may_not_request_is_refused(requester, web1):
    secret = make_role("break-glass", requestable_by=("sre-leads",))
    with pytest.raises(DomainError, match="break-glass") as exc:
        request_create(requester=requester, roles=[secret])
    assert exc.value.field == "roles"
    with pytest.raises(DomainError) as exc:
        request_create(requester=requester, resources=[web1], roles=[secret])
    assert exc.value.field == "roles"
    assert not AccessRequest.objects.exists()


def test_outsider_cannot_request_anything(outsider, prod_ssh, web1):
    with pytest.raises(DomainError) as exc:
        request_create(requester=outsider, resources=[web1], reason="INC-1")
    assert exc.value.field == "resources"
    with pytest.raises(DomainError) as exc:
        request_create(requester=outsider, roles=[prod_ssh], reason="INC-1")
    assert exc.value.field == "roles"


def test_a_request_must_name_a_resource_or_a_role(requester, prod_ssh):
    with pytest.raises(DomainError) as exc:
        request_create(requester=requester, reason="INC-1")
    assert exc.value.field == "resources"


def test_inactive_requester_is_refused(requester, ops):
    requester.is_active = False
    requester.save()
    with pytest.raises(PermissionRefused):
        request_create(requester=requester, roles=[ops])


def test_requester_cannot_suggest_themselves_as_reviewer(requester, reviewer, ops):
    with pytest.raises(DomainError) as exc:
        request_create(requester=requester, roles=[ops], suggested_reviewers=[reviewer, requester])
    assert exc.value.field == "suggested_reviewers"
    req = request_create(requester=requester, roles=[ops], suggested_reviewers=[reviewer])
    assert list(req.suggested_reviewers.all()) == [reviewer]


def test_at_most_300_resources_per_request(requester):
    make_role("all-nodes", resource_labels={})
    Resource.objects.bulk_create(Resource(kind="node", name=f"n{i:03}") for i in range(301))
    # A bulk insert bypasses the inventory's service, so it brings the role scopes up to date itself.
    role_scope_sync(resource_ids=Resource.objects.values_list("pk", flat=True))
    nodes = list(Resource.objects.order_by("name"))
    with pytest.raises(DomainError, match="300") as exc:
        request_create(requester=requester, resources=nodes)
    assert exc.value.field == "resources"
    assert not AccessRequest.objects.exists()
    req = request_create(requester=requester, resources=nodes[:300])
    assert req.resources.count() == 300


def test_the_same_resource_named_twice_is_requested_once(requester, reviewer, reviewer2, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1, web1], reason="INC-1")
    request_review(request=req, reviewer=reviewer, decision="approve")
    request_review(request=req, reviewer=reviewer2, decision="approve")
    assert req.grants.count() == 1


# --- revoke ----------------------------------------------------------------------------------------


def test_only_holders_of_revoke_can_revoke(requester, reviewer, revoker, auditor, staff, ops):
    req = make_request_in(State.APPROVED, requester=requester, reviewer=reviewer, revoker=revoker, role=ops)
    grant = req.grants.get()
    for user in (requester, reviewer, auditor, staff):
        with pytest.raises(PermissionRefused, match=r"^You need the revoke capability\.$"):
            grant_revoke(grant=grant, by=user, reason="nope")
    revoker.is_active = False
    revoker.save()
    with pytest.raises(PermissionRefused):
        grant_revoke(grant=grant, by=revoker, reason="nope")
    grant.refresh_from_db()
    assert grant.revoked_at is None
    assert grant_revoke(grant=grant, by=make_user("root", is_superuser=True), reason="superuser").revoked_at


@pytest.mark.parametrize("reason", ["", "  ", None])
def test_revoke_needs_a_reason(requester, reviewer, revoker, ops, reason):
    req = make_request_in(State.APPROVED, requester=requester, reviewer=reviewer, revoker=revoker, role=ops)
    grant = req.grants.get()
    with pytest.raises(DomainError) as exc:
        grant_revoke(grant=grant, by=revoker, reason=reason)
    assert exc.value.field == "reason"
    grant.refresh_from_db()
    assert grant.revoked_at is None


def test_request_is_revoked_only_once_none_of_its_grants_is_left(requester, revoker, web1, web2):
    role = make_role("self-service", auto_approve=True)
    req = request_create(requester=requester, resources=[web1, web2])
    first, second = req.grants.order_by("resource__name")
    grant_revoke(grant=first, by=revoker, reason="done with web-1")
    assert refreshed(req).state == State.APPROVED
    assert not access_check(user=requester, resource=web1, login="ubuntu").allowed
    assert access_check(user=requester, resource=web2, login="ubuntu").allowed
    assert not events("request.revoked").exists()
    grant_revoke(grant=second, by=revoker, reason="done with web-2")
    assert refreshed(req).state == State.REVOKED
    assert events("request.revoked").get().actor == revoker
    assert role.grants.filter(revoked_at__isnull=True).count() == 0


# --- eligibility at approval -------------------------------------------------------------


def test_requester_removed_from_the_requesting_group_gets_no_grants_on_approval(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops], reason="INC-3")
    requester.groups.remove(Group.objects.get(name="engineers"))

    with pytest.raises(StateConflict, match=r"^alice may no longer request prod-ops$"):
        request_review(request=req, reviewer=reviewer, decision="approve", reason="ok")

    assert refreshed(req).state == State.PENDING
    assert not Grant.objects.exists()
    assert not Review.objects.exists()
    refused = events("review.refused_requester_ineligible").get()
    assert refused.actor == reviewer
    assert refused.data["message"] == "alice may no longer request prod-ops"
    assert not events("request.approved").exists()
    # Put back in the group later, nothing was granted meanwhile: access needs a fresh approval.
    requester.groups.add(Group.objects.get(name="engineers"))
    assert not access_check(user=requester, resource=make_resource("web-9", labels={"env": "prod"})).allowed
    assert audit_sealed_verify().ok


def test_deactivated_requester_gets_no_grants_on_approval(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops], reason="INC-3")
    requester.is_active = False
    requester.save(update_fields=["is_active"])

    with pytest.raises(StateConflict, match="alice's account is not active"):
        request_review(request=req, reviewer=reviewer, decision="approve", reason="ok")

    assert refreshed(req).state == State.PENDING
    assert not Grant.objects.exists()


def test_a_review_that_does_not_reach_the_threshold_is_recorded_whatever_the_requester_lost(
    requester, reviewer, prod_ssh, web1
):
    req = request_create(requester=requester, resources=[web1], reason="INC-3")
    requester.groups.clear()

    request_review(request=req, reviewer=reviewer, decision="approve", reason="ok")

    assert refreshed(req).state == State.PENDING
    assert Review.objects.count() == 1


def test_an_approval_from_someone_who_left_the_reviewers_does_not_count(requester, reviewer, reviewer2, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1], reason="INC-4")
    request_review(request=req, reviewer=reviewer, decision="approve", reason="ok")
    reviewer.groups.clear()

    request_review(request=req, reviewer=reviewer2, decision="approve", reason="ok")

    assert refreshed(req).state == State.PENDING
    assert not Grant.objects.exists()
    dave = make_user("dave", groups=("sre-leads",))
    request_review(request=req, reviewer=dave, decision="approve", reason="ok")
    assert refreshed(req).state == State.APPROVED


def test_an_approval_from_a_deactivated_reviewer_does_not_count(requester, reviewer, reviewer2, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1], reason="INC-4")
    request_review(request=req, reviewer=reviewer, decision="approve", reason="ok")
    reviewer.is_active = False
    reviewer.save(update_fields=["is_active"])

    request_review(request=req, reviewer=reviewer2, decision="approve", reason="ok")

    assert refreshed(req).state == State.PENDING


# --- pending past its time to live ----------------------------------------------------------


def test_pending_request_past_its_ttl_reads_expired_before_any_sweep(requester, ops):
    now = timezone.now()
    req = request_create(requester=requester, roles=[ops], now=now)
    later = now + timedelta(hours=25)

    assert req.state == State.PENDING  # nothing recorded yet
    assert req.state_at(now) == State.PENDING
    assert req.state_at(later) == State.EXPIRED
    assert req.resolution_at(later) == (req.pending_expires_at, "pending time to live passed")
    assert list(AccessRequest.objects.in_state(State.EXPIRED, at=later)) == [req]
    assert not AccessRequest.objects.in_state(State.PENDING, at=later).exists()
    assert list(AccessRequest.objects.in_state(State.PENDING, at=now)) == [req]


def test_cancel_after_the_ttl_is_a_conflict_that_records_the_expiry(requester, ops):
    now = timezone.now()
    req = request_create(requester=requester, roles=[ops], now=now)

    with pytest.raises(StateConflict, match=r"expired at .* before it was cancelled"):
        request_cancel(request=req, user=requester, now=now + timedelta(hours=25))

    req = refreshed(req)
    assert req.state == State.EXPIRED
    assert req.resolved_at == now + timedelta(hours=25)
    assert req.resolution_reason == "pending time to live passed"
    assert events("request.expired").count() == 1
    assert not events("request.cancelled").exists()
    assert audit_sealed_verify().ok


def test_someone_elses_late_cancel_records_nothing(requester, outsider, ops):
    now = timezone.now()
    req = request_create(requester=requester, roles=[ops], now=now)
    with pytest.raises(PermissionRefused):
        request_cancel(request=req, user=outsider, now=now + timedelta(hours=25))
    assert refreshed(req).state == State.PENDING


# --- times follow the lock -------------------------------------------------------------------


def test_review_and_resolution_are_stamped_after_the_row_lock(requester, reviewer, ops):
    """The clock is read once the request row is held, never before."""
    req = request_create(requester=requester, roles=[ops], reason="INC-5")
    locked_at: list[datetime] = []

    def note_lock(execute, sql, params, many, context):
        if not locked_at and 'FROM "requests_app_accessrequest"' in sql:
            locked_at.append(timezone.now())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(note_lock):
        review = request_review(request=req, reviewer=reviewer, decision="approve", reason="ok")

    req = refreshed(req)
    assert locked_at
    assert review.created_at >= locked_at[0]
    assert req.resolved_at == review.created_at >= locked_at[0]
    assert req.grants.get().starts_at >= locked_at[0]


# --- a denial says why ------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_a_denial_needs_a_reason(requester, reviewer, ops, reason):
    req = request_create(requester=requester, roles=[ops])
    with pytest.raises(DomainError) as exc:
        request_review(request=req, reviewer=reviewer, decision="deny", reason=reason)
    assert exc.value.field == "reason"
    assert refreshed(req).state == State.PENDING
    assert not Review.objects.exists()


def test_the_denial_reason_is_the_requests_resolution(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops])
    request_review(request=req, reviewer=reviewer, decision="deny", reason="use the read replica")
    req = refreshed(req)
    assert (req.state, req.resolution_reason) == (State.DENIED, "use the read replica")


# --- every resolution: state, reason, time and one audit event of one shape ----------------


@pytest.mark.parametrize(
    ("state", "action", "actor", "reason"),
    [
        (State.APPROVED, "request.approved", "bob", ""),
        (State.DENIED, "request.denied", "bob", "not now"),
        (State.CANCELLED, "request.cancelled", "alice", "cancelled by the requester"),
        (State.REVOKED, "request.revoked", "ray", "incident over"),
    ],
)
def test_every_resolution_records_state_reason_time_and_one_audit_event(
    state, action, actor, reason, requester, reviewer, revoker, ops
):
    req = make_request_in(state, requester=requester, reviewer=reviewer, revoker=revoker, role=ops)

    (event,) = events(action)
    assert (req.state, req.resolution_reason) == (state, reason)
    # A revocation keeps the time the approval resolved the request.
    assert req.resolved_at is not None and req.resolved_at <= event.created_at
    assert (event.actor_username, event.target_id) == (actor, str(req.pk))
    assert {"requester": "alice", "state": state}.items() <= event.data.items()


def test_a_review_of_a_request_past_its_ttl_records_the_expiry_the_same_way(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops], reason="INC-7")
    later = timezone.now() + timedelta(days=2)

    with pytest.raises(StateConflict) as refused:
        request_review(request=req, reviewer=reviewer, decision="approve", now=later)

    req = refreshed(req)
    (event,) = events("request.expired")
    assert refused.value.code == "request_expired"
    assert (req.state, req.resolved_at, req.resolution_reason) == (
        State.EXPIRED,
        later,
        AccessRequest.PENDING_TTL_PASSED,
    )
    assert (event.actor_username, event.data) == ("", {"requester": "alice", "state": State.EXPIRED})
