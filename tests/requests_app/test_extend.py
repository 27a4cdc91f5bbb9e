"""Extending approved access, narrowing an approval and reason patterns: services and API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from requests_app.models import AccessRequest, Grant
from requests_app.services import (
    extension_offer,
    grant_drop,
    grant_revoke,
    request_cancel,
    request_create,
    request_drop,
    request_extend,
    request_review,
)
from tests.conftest import make_resource, make_role

pytestmark = pytest.mark.django_db

State = AccessRequest.State


@pytest.fixture
def ops(db):
    """Role-wide, one approval, up to two hours, one extension (the default)."""
    return make_role("prod-ops", approvals=1, max_duration=timedelta(hours=2))


def approved(requester, reviewer, *, roles=(), resources=(), duration="1h", reason="INC-1") -> AccessRequest:
    req = request_create(
        requester=requester, roles=list(roles), resources=list(resources), duration=duration, reason=reason
    )
    request_review(request=req, reviewer=reviewer, decision="approve")
    req.refresh_from_db()
    assert req.state == State.APPROVED
    return req


def windows(req: AccessRequest) -> list[tuple]:
    return sorted((g.role_id, g.resource_id, g.starts_at, g.expires_at) for g in Grant.objects.filter(request=req))


# --- extend -------------------------------------------------------------------------------------


def test_extension_is_a_pending_request_linked_to_the_original_and_audited(requester, reviewer, ops):
    original = approved(requester, reviewer, roles=[ops])
    (grant,) = original.grants.all()
    extension = request_extend(request=original, requester=requester, duration="30m", reason="INC-1 still on")
    extension.refresh_from_db()
    assert extension.state == State.PENDING
    assert extension.extends_id == original.pk
    assert [r.name for r in extension.roles.all()] == ["prod-ops"]
    assert extension.duration == timedelta(minutes=30)
    # It can never outwait the access it would extend.
    assert extension.pending_expires_at <= grant.expires_at
    event = AuditEvent.objects.get(action="request.extended")
    assert event.target_id == str(extension.pk)
    assert event.data["extends"] == str(original.pk) and event.data["duration"] == 1800


def test_approved_extension_adds_grants_from_each_live_grant_end_without_touching_them(
    requester, reviewer, revoker, ops
):
    web_ops = make_role("web-ops", approvals=1, resource_labels={"team": ["web"]}, max_duration=timedelta(hours=2))
    a, b, c = (make_resource(n, labels={"team": "web"}) for n in ("a-1", "b-1", "c-1"))
    original = approved(requester, reviewer, roles=[web_ops], resources=[a, b, c])
    before = windows(original)
    revoked = original.grants.get(resource=c)
    grant_revoke(grant=revoked, by=revoker, reason="c is being rebuilt")
    extension = request_extend(request=original, requester=requester, duration="45m", reason="more")
    request_review(request=extension, reviewer=reviewer, decision="approve")
    # The original's grants are as they were (bar the revocation), and c is not extended.
    assert [w for w in windows(original)] == before
    new = {g.resource_id: g for g in Grant.objects.filter(request=extension)}
    assert set(new) == {a.pk, b.pk}
    for grant in original.grants.exclude(pk=revoked.pk):
        assert new[grant.resource_id].starts_at == grant.expires_at
        assert new[grant.resource_id].expires_at == grant.expires_at + timedelta(minutes=45)
        assert new[grant.resource_id].role_id == grant.role_id


def test_extending_an_extension_continues_from_the_latest_end(requester, reviewer, ops):
    ops.max_extensions = 2
    ops.save()
    original = approved(requester, reviewer, roles=[ops])
    first = request_extend(request=original, requester=requester, duration="30m")
    request_review(request=first, reviewer=reviewer, decision="approve")
    second = request_extend(request=first, requester=requester, duration="20m")
    assert second.extends_id == original.pk  # always the chain's first request
    request_review(request=second, reviewer=reviewer, decision="approve")
    (g1,), (g2,), (g3,) = (list(r.grants.all()) for r in (original, first, second))
    assert g2.starts_at == g1.expires_at and g3.starts_at == g2.expires_at
    assert g3.expires_at - g3.starts_at == timedelta(minutes=20)


def test_max_extensions_counts_pending_and_approved_ones(requester, reviewer, ops):
    original = approved(requester, reviewer, roles=[ops])
    request_extend(request=original, requester=requester, duration="30m")
    with pytest.raises(StateConflict) as exc:
        request_extend(request=original, requester=requester, duration="30m")
    assert exc.value.code == "max_extensions" and "prod-ops" in exc.value.message
    assert original.extensions.count() == 1


def test_a_cancelled_extension_frees_its_place(requester, reviewer, ops):
    original = approved(requester, reviewer, roles=[ops])
    pending = request_extend(request=original, requester=requester, duration="30m")
    request_cancel(request=pending, user=requester)
    assert request_extend(request=original, requester=requester, duration="30m").state == State.PENDING


def test_max_extensions_zero_forbids_extending(requester, reviewer):
    role = make_role("no-ext", approvals=1, max_extensions=0)
    original = approved(requester, reviewer, roles=[role])
    with pytest.raises(StateConflict, match="allows no extension"):
        request_extend(request=original, requester=requester, duration="10m")


def test_nothing_live_is_a_conflict(requester, reviewer, ops):
    original = approved(requester, reviewer, roles=[ops], duration="30m")
    later = timezone.now() + timedelta(hours=1)
    with pytest.raises(StateConflict) as exc:
        request_extend(request=original, requester=requester, duration="10m", now=later)
    assert exc.value.code == "nothing_live"
    assert not original.extensions.exists()


def test_over_the_cap_is_refused_naming_duration(requester, reviewer, ops):
    original = approved(requester, reviewer, roles=[ops])
    with pytest.raises(DomainError) as exc:
        request_extend(request=original, requester=requester, duration="3h")
    assert exc.value.field == "duration" and exc.value.status_code == 400
    assert not original.extensions.exists()


def test_only_the_requester_extends_and_only_approved_requests(requester, reviewer, ops):
    original = approved(requester, reviewer, roles=[ops])
    with pytest.raises(PermissionRefused):
        request_extend(request=original, requester=reviewer, duration="10m")
    pending = request_create(requester=requester, roles=[ops])
    with pytest.raises(StateConflict, match="pending"):
        request_extend(request=pending, requester=requester, duration="10m")
    request_review(request=pending, reviewer=reviewer, decision="deny", reason="no")
    with pytest.raises(StateConflict, match="denied"):
        request_extend(request=pending, requester=requester, duration="10m")
    assert AccessRequest.objects.filter(extends__isnull=False).count() == 0


def test_auto_approved_role_extends_at_once(requester, self_service, dev1):
    original = request_create(requester=requester, resources=[dev1], duration="1h")
    assert original.state == State.APPROVED
    extension = request_extend(request=original, requester=requester, duration="2h")
    assert extension.state == State.APPROVED
    (old,), (new,) = original.grants.all(), extension.grants.all()
    assert new.starts_at == old.expires_at and new.resource_id == dev1.pk


def test_revoking_the_original_grant_ends_its_extension_too(requester, reviewer, revoker, ops):
    original = approved(requester, reviewer, roles=[ops])
    extension = request_extend(request=original, requester=requester, duration="30m")
    request_review(request=extension, reviewer=reviewer, decision="approve")
    grant_revoke(grant=original.grants.get(), by=revoker, reason="incident closed")
    (continued,) = extension.grants.all()
    assert continued.revoked_at is not None and continued.revoke_reason == "incident closed"
    extension.refresh_from_db()
    original.refresh_from_db()
    assert (original.state, extension.state) == (State.REVOKED, State.REVOKED)


@pytest.mark.parametrize("give_back", ["grant", "request"])
def test_giving_the_original_back_ends_its_extension_too(requester, reviewer, ops, give_back):
    original = approved(requester, reviewer, roles=[ops])
    extension = request_extend(request=original, requester=requester, duration="30m")
    request_review(request=extension, reviewer=reviewer, decision="approve")
    if give_back == "grant":
        grant_drop(grant=original.grants.get(), user=requester, reason="done early")
    else:
        request_drop(request=original, user=requester, reason="done early")
    (continued,) = extension.grants.all()
    # The extension's window has not started yet: left alone, access would come back with it.
    assert continued.starts_at > timezone.now()
    assert continued.revoked_at is not None and continued.revoked_by == requester
    extension.refresh_from_db()
    original.refresh_from_db()
    assert (original.state, extension.state) == (State.REVOKED, State.REVOKED)
    dropped = AuditEvent.objects.filter(action="grant.dropped").order_by("id")
    assert [e.target_id for e in dropped] == [str(original.grants.get().pk), str(continued.pk)]
    assert dropped[1].data["continues"] == original.grants.get().pk


def test_an_extension_approved_after_the_original_was_revoked_is_refused(requester, reviewer, revoker, ops):
    original = approved(requester, reviewer, roles=[ops])
    extension = request_extend(request=original, requester=requester, duration="30m")
    grant_revoke(grant=original.grants.get(), by=revoker, reason="done")
    with pytest.raises(StateConflict) as exc:
        request_review(request=extension, reviewer=reviewer, decision="approve")
    assert exc.value.code == "nothing_live"
    extension.refresh_from_db()
    assert extension.state == State.PENDING and not extension.grants.exists()
    assert AuditEvent.objects.filter(action="review.refused_nothing_to_extend").count() == 1


def test_extension_offer_says_until_when_or_none(requester, reviewer, ops):
    original = approved(requester, reviewer, roles=[ops])
    now = timezone.now()
    assert extension_offer(original, user=requester, at=now) == (original.grants.get().expires_at, None)
    until, refusal = extension_offer(original, user=reviewer, at=now)
    assert until is None and isinstance(refusal, PermissionRefused)
    request_extend(request=original, requester=requester, duration="10m")
    until, refusal = extension_offer(original, user=requester, at=now)  # its one extension is used
    assert until is None and refusal.code == "max_extensions"


# --- narrowing ----------------------------------------------------------------------------------


def test_an_approval_may_shorten_the_access(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops], duration="2h")
    review = request_review(request=req, reviewer=reviewer, decision="approve", duration="30m")
    assert review.duration == timedelta(minutes=30)
    (grant,) = req.grants.all()
    assert grant.expires_at - grant.starts_at == timedelta(minutes=30)
    assert AuditEvent.objects.get(action="review.created").data["duration"] == 1800


def test_the_grant_lasts_the_shortest_approving_duration(requester, reviewer, reviewer2, prod_ssh, web1):
    req = request_create(requester=requester, resources=[web1], reason="INC-1", duration="1h")
    request_review(request=req, reviewer=reviewer, decision="approve", duration="20m")
    request_review(request=req, reviewer=reviewer2, decision="approve", duration="40m")
    (grant,) = req.grants.all()
    assert grant.expires_at - grant.starts_at == timedelta(minutes=20)


def test_narrowing_to_longer_or_on_a_denial_is_refused_and_changes_nothing(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops], duration="1h")
    with pytest.raises(DomainError) as exc:
        request_review(request=req, reviewer=reviewer, decision="approve", duration="2h")
    assert exc.value.field == "duration" and exc.value.status_code == 400
    with pytest.raises(DomainError) as exc:
        request_review(request=req, reviewer=reviewer, decision="deny", reason="no", duration="10m")
    assert exc.value.field == "duration"
    req.refresh_from_db()
    assert req.state == State.PENDING and not req.reviews.exists()


# --- reason patterns ----------------------------------------------------------------------------


@pytest.fixture
def ticketed(db):
    return make_role(
        "ticketed", approvals=1, reason_pattern=r"(INC|CHG)-[0-9]+.*", reason_hint="start with the ticket, e.g. INC-12"
    )


def test_a_reason_must_match_the_role_pattern_in_full(requester, ticketed):
    with pytest.raises(DomainError) as exc:
        request_create(requester=requester, roles=[ticketed], reason="fixing INC-12")
    assert exc.value.field == "reason" and "start with the ticket" in exc.value.message
    with pytest.raises(DomainError):
        request_create(requester=requester, roles=[ticketed], reason="")
    assert not AccessRequest.objects.exists()
    assert request_create(requester=requester, roles=[ticketed], reason="CHG-9 deploy").state == State.PENDING


def test_an_extension_reason_must_match_too(requester, reviewer, ticketed):
    original = approved(requester, reviewer, roles=[ticketed], reason="INC-4 outage")
    with pytest.raises(DomainError) as exc:
        request_extend(request=original, requester=requester, duration="10m", reason="more time")
    assert exc.value.field == "reason"
    assert request_extend(request=original, requester=requester, duration="10m", reason="INC-4 still").pk


# --- API ----------------------------------------------------------------------------------------


def test_api_extend_creates_the_extension(api, requester, reviewer, ops):
    original = approved(requester, reviewer, roles=[ops])
    response = api(requester).post(
        f"/api/v1/requests/{original.pk}/extend/", {"duration": "30m", "reason": "more"}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["extends"] == str(original.pk) and body["state"] == "pending" and body["duration"] == 1800
    detail = api(reviewer).get(f"/api/v1/requests/{body['id']}/").json()
    assert detail["extends"] == str(original.pk)


def test_api_extend_refusals(api, requester, reviewer, outsider, ops):
    original = approved(requester, reviewer, roles=[ops])
    url = f"/api/v1/requests/{original.pk}/extend/"
    assert api(outsider).post(url, {"duration": "10m"}, format="json").status_code == 404
    assert api(reviewer).post(url, {"duration": "10m"}, format="json").status_code == 403
    over = api(requester).post(url, {"duration": "5h"}, format="json")
    assert over.status_code == 400 and "duration" in over.json()
    unknown = api(requester).post(url, {"duration": "10m", "until": "x"}, format="json")
    assert unknown.status_code == 400 and "until" in unknown.json()
    assert api(requester).post(url, {"duration": "10m"}, format="json").status_code == 201
    again = api(requester).post(url, {"duration": "10m"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "max_extensions"
    assert original.extensions.count() == 1


def test_api_review_with_duration_narrows_and_shows_it(api, requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops], duration="2h")
    url = f"/api/v1/requests/{req.pk}/reviews/"
    longer = api(reviewer).post(url, {"decision": "approve", "duration": "3h"}, format="json")
    assert longer.status_code == 400 and "duration" in longer.json()
    response = api(reviewer).post(url, {"decision": "approve", "duration": 600}, format="json")
    assert response.status_code == 201 and response.json()["duration"] == 600
    detail = api(requester).get(f"/api/v1/requests/{req.pk}/").json()
    (grant,) = detail["grants"]
    assert detail["reviews"][0]["duration"] == 600
    assert detail["state"] == "approved"
    assert req.grants.get().expires_at - req.grants.get().starts_at == timedelta(minutes=10)
    assert grant["id"] == req.grants.get().pk


# --- reminder -----------------------------------------------------------------------------------


def test_the_reminder_before_the_end_links_to_extend(requester, reviewer, ops, handed_off):
    from requests_app.models import Notification, NotificationChannel
    from requests_app.services import grants_remind_expiring

    Event = NotificationChannel.Event
    NotificationChannel.objects.create(
        name="news",
        kind=NotificationChannel.Kind.WEBHOOK,
        url="http://127.0.0.1:9/hook",
        secret="k",
        events=[Event.GRANT_EXPIRING],
    )
    original = approved(requester, reviewer, roles=[ops])
    grant = original.grants.get()
    at = grant.expires_at - timedelta(minutes=5)
    assert grants_remind_expiring(now=at) == 1
    assert grants_remind_expiring(now=at) == 0  # claimed once
    row = Notification.objects.get(event=Event.GRANT_EXPIRING)
    extend_url = f"http://127.0.0.1:8000/requests/{original.pk}/extend/"
    assert row.payload["link"] == extend_url
    assert row.payload["request"]["extend_url"] == extend_url


def test_a_grant_an_approved_extension_continues_gets_no_reminder(requester, reviewer, ops, dev1, self_service):
    from requests_app.services import grants_remind_expiring

    role_wide = approved(requester, reviewer, roles=[ops])
    on_resource = request_create(requester=requester, resources=[dev1], duration="1h")
    for req in (role_wide, on_resource):
        extension = request_extend(request=req, requester=requester, duration="30m")
        if extension.state == State.PENDING:
            # Pending is no promise: still reminded until it is approved.
            at = req.grants.get().expires_at - timedelta(minutes=5)
            assert Grant.objects.due_for_reminder(at=at, before=timedelta(minutes=10)).filter(request=req).exists()
            request_review(request=extension, reviewer=reviewer, decision="approve")
    last = max(g.expires_at for g in Grant.objects.filter(request__extends__isnull=True))
    assert grants_remind_expiring(now=last - timedelta(minutes=5)) == 0
    # The extensions' own grants are reminded before they end.
    final = max(g.expires_at for g in Grant.objects.filter(request__extends__isnull=False))
    assert grants_remind_expiring(now=final - timedelta(minutes=5)) == 2
