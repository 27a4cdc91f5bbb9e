"""Giving access back (drop) and break-glass access with its review afterwards, on every path but the browser's."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from requests_app import services, tasks
from requests_app.credentials.certificates import certificate_issue
from requests_app.credentials.hosts import resource_ssh_principals, ssh_revoked_public_keys
from requests_app.models import AccessRequest, Grant, Notification, NotificationChannel, SweepRun
from requests_app.services import (
    grant_drop,
    grants_end_expired,
    request_create,
    request_drop,
    request_post_review,
    request_review,
    requests_announce_post_review,
)
from tests.conftest import audit_sealed_verify, make_resource, make_role, make_user
from tests.ssh.keys import ed25519_key, openssh_public

pytestmark = pytest.mark.django_db

PostReview = AccessRequest.PostReview
Event = NotificationChannel.Event


@pytest.fixture
def web_ssh(db):
    return make_role("web-ssh", approvals=1, logins=["ubuntu"])


@pytest.fixture
def emergency(db):
    """A break-glass role over prod nodes, reviewed by sre-leads."""
    return make_role("prod-emergency", break_glass=True, logins=["root"], max_duration=timedelta(hours=2))


@pytest.fixture
def approved(requester, reviewer, web_ssh, web1, web2) -> AccessRequest:
    made = request_create(requester=requester, roles=[web_ssh], resources=[web1, web2], reason="INC-1")
    request_review(request=made, reviewer=reviewer, decision="approve")
    return made


def actions(target_id) -> list[str]:
    return list(AuditEvent.objects.filter(target_id=str(target_id)).order_by("id").values_list("action", flat=True))


# --- drop: services -----------------------------------------------------------------------------


def test_dropping_a_grant_ends_it_now_and_the_access_check_refuses_at_once(requester, approved, web1, web2):
    grant = approved.grants.get(resource=web1)
    assert services.access_check(user=requester, resource=web1).allowed

    dropped = grant_drop(grant=grant, user=requester, reason="done early")

    assert dropped.revoked_at is not None and dropped.revoked_by == requester
    assert dropped.revoke_reason == "done early"
    decision = services.access_check(user=requester, resource=web1)
    assert not decision.allowed and decision.code == services.Decision.NO_GRANT
    # The other grant of the request is untouched, and the request is still approved.
    assert services.access_check(user=requester, resource=web2).allowed
    approved.refresh_from_db()
    assert approved.state == AccessRequest.State.APPROVED
    event = AuditEvent.objects.get(action="grant.dropped")
    assert event.target_id == str(grant.pk) and event.actor_username == "alice"
    assert event.data == {"request": str(approved.pk), "user": "alice", "reason": "done early"}


def test_dropping_the_last_live_grant_revokes_the_request(requester, approved, web1, web2):
    grant_drop(grant=approved.grants.get(resource=web1), user=requester)
    grant_drop(grant=approved.grants.get(resource=web2), user=requester)

    approved.refresh_from_db()
    assert approved.state == AccessRequest.State.REVOKED
    assert approved.resolution_reason == services.DROPPED
    assert actions(approved.pk)[-1] == "request.revoked"
    assert AuditEvent.objects.get(action="request.revoked").data["by_owner"] is True


def test_dropping_a_whole_request_ends_every_live_grant_in_one_go(requester, approved, web1, web2):
    ended = request_drop(request=approved, user=requester, reason="incident closed")

    assert {g.resource_id for g in ended} == {web1.pk, web2.pk}
    assert not Grant.objects.filter(request=approved).live(at=timezone.now()).exists()
    assert set(Grant.objects.filter(request=approved).values_list("revoked_by__username", flat=True)) == {"alice"}
    approved.refresh_from_db()
    assert approved.state == AccessRequest.State.REVOKED
    assert AuditEvent.objects.filter(action="grant.dropped").count() == 2
    assert not services.access_check(user=requester, resource=web1).allowed
    assert audit_sealed_verify().ok


def test_dropping_twice_or_an_ended_grant_is_a_conflict_and_changes_nothing(requester, reviewer, approved, web1):
    grant = approved.grants.get(resource=web1)
    grant_drop(grant=grant, user=requester, reason="first")
    with pytest.raises(StateConflict, match="already revoked"):
        grant_drop(grant=grant, user=requester, reason="second")
    grant.refresh_from_db()
    assert grant.revoke_reason == "first"

    request_drop(request=approved, user=requester)
    with pytest.raises(StateConflict) as refused:
        request_drop(request=approved, user=requester)
    assert refused.value.code == "nothing_live"

    fresh = request_create(requester=requester, roles=["web-ssh"], resources=[web1], reason="again")
    request_review(request=fresh, reviewer=reviewer, decision="approve")
    ended = fresh.grants.get()
    with pytest.raises(StateConflict, match="already ended"):
        grant_drop(grant=ended, user=requester, now=ended.expires_at + timedelta(seconds=1))
    assert AuditEvent.objects.filter(action="grant.dropped").count() == 2


def test_only_the_owner_drops_even_holders_of_revoke(requester, approved, revoker, reviewer, web1):
    grant = approved.grants.get(resource=web1)
    for other in (revoker, reviewer):
        with pytest.raises(PermissionRefused):
            grant_drop(grant=grant, user=other)
        with pytest.raises(PermissionRefused):
            request_drop(request=approved, user=other)
    assert not Grant.objects.filter(request=approved, revoked_at__isnull=False).exists()


def test_a_pending_request_has_nothing_to_drop(requester, web_ssh, web1):
    pending = request_create(requester=requester, roles=[web_ssh], resources=[web1], reason="INC-2")
    with pytest.raises(StateConflict, match="pending"):
        request_drop(request=pending, user=requester)


def test_a_dropped_grants_certificates_are_listed_as_revoked_and_principals_withdrawn(requester, approved, web1):
    grant = approved.grants.get(resource=web1)
    key = ed25519_key()
    certificate_issue(grant=grant, user=requester, public_key=openssh_public(key))
    assert ssh_revoked_public_keys() == []
    assert resource_ssh_principals(resource=web1) == ["ubuntu@web-1"]

    grant_drop(grant=grant, user=requester)

    assert ssh_revoked_public_keys() == [openssh_public(key)]
    assert resource_ssh_principals(resource=web1) == []


def test_the_end_of_a_dropped_grant_is_announced_as_given_back(requester, approved, web1):
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", url="http://127.0.0.1:9/", events=[Event.GRANT_ENDED]
    )
    grant_drop(grant=approved.grants.get(resource=web1), user=requester)

    assert grants_end_expired() == 1

    message = Notification.objects.get(channel=channel)
    assert message.payload["text"].startswith("Given back: alice's access to node/web-1")


# --- drop: API ------------------------------------------------------------------------------------


def test_api_drop_of_a_grant_by_its_owner(api, requester, approved, web1):
    grant = approved.grants.get(resource=web1)

    response = api(requester).post(f"/api/v1/grants/{grant.pk}/drop/", {"reason": "done"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "revoked" and body["revoked_by"] == "alice" and body["revoke_reason"] == "done"
    again = api(requester).post(f"/api/v1/grants/{grant.pk}/drop/", {}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "grant_ended"


def test_api_drop_of_someone_elses_grant_is_404_or_403_and_changes_nothing(api, approved, outsider, revoker, web1):
    grant = approved.grants.get(resource=web1)
    # Not visible: answered as missing.
    assert api(outsider).post(f"/api/v1/grants/{grant.pk}/drop/", {}, format="json").status_code == 404
    # Visible (revoke capability), but not theirs to give back: they revoke instead.
    refused = api(revoker).post(f"/api/v1/grants/{grant.pk}/drop/", {}, format="json")
    assert refused.status_code == 403
    assert "owner" in refused.json()["detail"]
    grant.refresh_from_db()
    assert grant.revoked_at is None


def test_api_drop_refuses_unknown_fields_and_overlong_reasons(api, requester, approved, web1):
    grant = approved.grants.get(resource=web1)
    unknown = api(requester).post(f"/api/v1/grants/{grant.pk}/drop/", {"why": "x"}, format="json")
    assert unknown.status_code == 400 and "why" in unknown.json()
    long = api(requester).post(f"/api/v1/requests/{approved.pk}/drop/", {"reason": "x" * 5000}, format="json")
    assert long.status_code == 400 and "reason" in long.json()
    assert not Grant.objects.filter(revoked_at__isnull=False).exists()


def test_api_drop_of_a_request(api, requester, reviewer, approved):
    # The reviewer may see the request but may not give back someone else's access.
    assert api(reviewer).post(f"/api/v1/requests/{approved.pk}/drop/", {}, format="json").status_code == 403

    response = api(requester).post(f"/api/v1/requests/{approved.pk}/drop/", {"reason": "finished"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "revoked"
    assert {g["state"] for g in body["grants"]} == {"revoked"}
    assert api(requester).post(f"/api/v1/requests/{approved.pk}/drop/", {}, format="json").status_code == 409
    stranger = make_user("eve", groups=("engineers",))
    assert api(stranger).post(f"/api/v1/requests/{approved.pk}/drop/", {}, format="json").status_code == 404


# --- break-glass: creation ------------------------------------------------------------------------------


def test_a_break_glass_request_is_approved_at_once_and_awaits_its_review(requester, emergency, web1):
    made = request_create(requester=requester, roles=[emergency], resources=[web1], reason="INC-9 prod down")

    assert made.state == AccessRequest.State.APPROVED
    assert made.break_glass is True and made.post_review == PostReview.PENDING
    assert services.access_check(user=requester, resource=web1, login="root").allowed
    assert actions(made.pk) == ["request.created", "request.break_glass", "request.approved"]
    assert AuditEvent.objects.get(action="request.approved").data["auto"] is True


def test_break_glass_always_needs_a_reason(requester, emergency, web1):
    with pytest.raises(DomainError) as refused:
        request_create(requester=requester, roles=[emergency], resources=[web1], reason="  ")
    assert refused.value.field == "reason"
    assert not AccessRequest.objects.exists()


def test_a_mixed_request_follows_normal_review(requester, emergency, web_ssh):
    made = request_create(requester=requester, roles=[emergency, web_ssh], reason="INC-9")
    assert made.state == AccessRequest.State.PENDING
    assert made.break_glass is False and made.post_review is None
    assert not Grant.objects.filter(request=made).exists()


def test_break_glass_is_announced_urgently_to_reviewers_and_every_urgent_channel(requester, reviewer, emergency, web1):
    subscribed = NotificationChannel.objects.create(
        name="reviewers-mail", kind="email", events=[Event.REQUEST_BREAK_GLASS]
    )
    urgent_only = NotificationChannel.objects.create(
        name="pager", kind="webhook", url="http://127.0.0.1:9/", urgent=True, events=[]
    )
    other_role = make_role("db-admin", resource_kinds=["db"])
    # Limited to another role and urgent: urgent wins.
    urgent_elsewhere = NotificationChannel.objects.create(
        name="pager-db", kind="webhook", url="http://127.0.0.1:9/", urgent=True
    )
    urgent_elsewhere.roles.set([other_role])
    quiet = NotificationChannel.objects.create(
        name="quiet", kind="webhook", url="http://127.0.0.1:9/", events=[Event.REQUEST_CREATED]
    )

    made = request_create(requester=requester, roles=[emergency], resources=[web1], reason="INC-9 prod down")

    urgent = Notification.objects.filter(event=Event.REQUEST_BREAK_GLASS)
    assert set(urgent.values_list("channel__name", flat=True)) == {"reviewers-mail", "pager", "pager-db"}
    mail = urgent.get(channel=subscribed).payload
    assert mail["to"] == ["bob@example.com"]  # the role's reviewers, never the requester
    hook = urgent.get(channel=urgent_only).payload
    assert hook["text"].startswith("URGENT: alice took break-glass access to prod-emergency on node/web-1")
    assert hook["request"]["break_glass"] is True and hook["request"]["post_review"] == "pending"
    assert "/admin/requests_app/accessrequest/" in hook["link"]
    assert not Notification.objects.filter(channel=quiet).exists()
    assert made.pk


# --- break-glass: post-review ------------------------------------------------------------------------


@pytest.fixture
def glass(requester, emergency, web1) -> AccessRequest:
    return request_create(requester=requester, roles=[emergency], resources=[web1], reason="INC-9 prod down")


def test_ratifying_keeps_the_access_and_records_who_and_why(glass, reviewer, requester, web1):
    done = request_post_review(request=glass, reviewer=reviewer, decision="ratify", reason="checked the incident")

    assert done.post_review == PostReview.RATIFIED
    glass.refresh_from_db()
    assert glass.post_reviewed_by == reviewer and glass.post_review_reason == "checked the incident"
    assert glass.state == AccessRequest.State.APPROVED
    assert services.access_check(user=requester, resource=web1).allowed
    event = AuditEvent.objects.get(action="request.post_reviewed")
    assert event.actor_username == "bob" and event.data["decision"] == "ratify"


def test_rejecting_ends_every_live_grant_at_once(glass, reviewer, requester, web1):
    key = ed25519_key()
    certificate_issue(grant=glass.grants.get(), user=requester, public_key=openssh_public(key))

    request_post_review(request=glass, reviewer=reviewer, decision="reject", reason="no incident on record")

    glass.refresh_from_db()
    assert glass.post_review == PostReview.REJECTED
    assert glass.state == AccessRequest.State.REVOKED
    grant = glass.grants.get()
    assert grant.revoked_by == reviewer and grant.revoke_reason == "break-glass rejected: no incident on record"
    assert not services.access_check(user=requester, resource=web1).allowed
    assert ssh_revoked_public_keys() == [openssh_public(key)]
    assert actions(glass.pk)[-2:] == ["request.post_reviewed", "request.revoked"]
    assert audit_sealed_verify().ok


def test_the_requester_can_never_post_review_their_own(glass, requester):
    # Even as a reviewer of the role.
    requester.groups.add(Group.objects.get(name="sre-leads"))
    with pytest.raises(PermissionRefused, match="your own"):
        request_post_review(request=glass, reviewer=requester, decision="ratify", reason="fine")
    glass.refresh_from_db()
    assert glass.post_review == PostReview.PENDING
    assert AuditEvent.objects.filter(action="review.refused_self", target_id=str(glass.pk)).exists()


def test_an_ineligible_reviewer_is_refused_and_audited(glass, outsider):
    with pytest.raises(PermissionRefused):
        request_post_review(request=glass, reviewer=outsider, decision="reject", reason="no")
    glass.refresh_from_db()
    assert glass.post_review == PostReview.PENDING and glass.state == AccessRequest.State.APPROVED
    assert AuditEvent.objects.filter(action="review.refused_ineligible").exists()


def test_post_reviewing_twice_or_a_normal_request_is_a_conflict(glass, reviewer, reviewer2, approved):
    request_post_review(request=glass, reviewer=reviewer, decision="ratify")
    with pytest.raises(StateConflict) as twice:
        request_post_review(request=glass, reviewer=reviewer2, decision="reject", reason="late")
    assert twice.value.code == "already_post_reviewed"
    with pytest.raises(StateConflict) as normal:
        request_post_review(request=approved, reviewer=reviewer2, decision="ratify")
    assert normal.value.code == "not_break_glass"
    glass.refresh_from_db()
    assert glass.post_review == PostReview.RATIFIED and glass.state == AccessRequest.State.APPROVED


def test_a_rejection_needs_a_reason_and_a_decision_must_be_known(glass, reviewer):
    with pytest.raises(DomainError) as no_reason:
        request_post_review(request=glass, reviewer=reviewer, decision="reject", reason="")
    assert no_reason.value.field == "reason"
    with pytest.raises(DomainError) as bad:
        request_post_review(request=glass, reviewer=reviewer, decision="approve", reason="x")
    assert bad.value.field == "decision"
    glass.refresh_from_db()
    assert glass.post_review == PostReview.PENDING


def test_access_given_back_can_still_be_post_reviewed(glass, requester, reviewer):
    request_drop(request=glass, user=requester)
    done = request_post_review(request=glass, reviewer=reviewer, decision="reject", reason="not needed")
    assert done.post_review == PostReview.REJECTED
    assert AuditEvent.objects.filter(action="grant.revoked").count() == 0  # nothing was live to end


# --- break-glass: API --------------------------------------------------------------------------------------


def test_api_detail_shows_break_glass_and_post_review(api, glass, requester, reviewer, approved):
    body = api(requester).get(f"/api/v1/requests/{glass.pk}/").json()
    assert body["break_glass"] is True and body["post_review"] == "pending"
    assert body["post_reviewed_by"] is None
    normal = api(requester).get(f"/api/v1/requests/{approved.pk}/").json()
    assert normal["break_glass"] is False and normal["post_review"] is None

    response = api(reviewer).post(
        f"/api/v1/requests/{glass.pk}/post-review/", {"decision": "reject", "reason": "no ticket"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["post_review"] == "rejected" and body["post_reviewed_by"] == "bob"
    assert body["post_review_reason"] == "no ticket" and body["state"] == "revoked"
    again = api(reviewer).post(f"/api/v1/requests/{glass.pk}/post-review/", {"decision": "ratify"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "already_post_reviewed"


def test_api_lists_break_glass_awaiting_review(api, glass, reviewer, approved, requester, emergency, web1):
    ratified = request_create(requester=requester, roles=[emergency], resources=[web1], reason="INC-12")
    request_post_review(request=ratified, reviewer=reviewer, decision="ratify")

    listed = api(reviewer).get("/api/v1/requests/", {"post_review": "pending", "scope": "reviewable"})

    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()["results"]] == [str(glass.pk)]
    bad = api(reviewer).get("/api/v1/requests/", {"post_review": "maybe"})
    assert bad.status_code == 400 and "post_review" in bad.json()


def test_api_post_review_refusals(api, glass, requester, outsider, reviewer, approved):
    url = f"/api/v1/requests/{glass.pk}/post-review/"
    assert api(requester).post(url, {"decision": "ratify"}, format="json").status_code == 403
    assert api(outsider).post(url, {"decision": "ratify"}, format="json").status_code == 404
    bad = api(reviewer).post(url, {"decision": "approve"}, format="json")
    assert bad.status_code == 400 and "decision" in bad.json()
    extra = api(reviewer).post(url, {"decision": "ratify", "note": "x"}, format="json")
    assert extra.status_code == 400 and "note" in extra.json()
    normal = api(reviewer).post(f"/api/v1/requests/{approved.pk}/post-review/", {"decision": "ratify"}, format="json")
    assert normal.status_code == 409 and normal.json()["code"] == "not_break_glass"
    glass.refresh_from_db()
    assert glass.post_review == PostReview.PENDING


def test_api_create_of_a_break_glass_request_answers_approved(api, requester, emergency, web1):
    response = api(requester).post("/api/v1/requests/", {"resources": ["node/web-1"], "reason": "INC-9"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] == "approved" and body["break_glass"] is True and body["post_review"] == "pending"
    assert len(body["grants"]) == 1


# --- break-glass: the daily re-announcement --------------------------------------------------------------


def test_unreviewed_break_glass_is_announced_again_daily_until_reviewed(glass, reviewer, requester, emergency, web1):
    channel = NotificationChannel.objects.create(name="pager", kind="webhook", url="http://127.0.0.1:9/", urgent=True)
    reviewed = request_create(requester=requester, roles=[emergency], resources=[web1], reason="INC-10")
    request_post_review(request=reviewed, reviewer=reviewer, decision="ratify")
    start = glass.created_at

    assert requests_announce_post_review(now=start + timedelta(hours=23)) == 0
    assert requests_announce_post_review(now=start + timedelta(hours=25)) == 1
    # Claimed: a second run the same day finds nothing.
    assert requests_announce_post_review(now=start + timedelta(hours=25, minutes=1)) == 0
    assert requests_announce_post_review(now=start + timedelta(hours=50)) == 1

    # The channel came after the first announcement: what it got are the two days' reminders, one each.
    sent = Notification.objects.filter(channel=channel, event=Event.REQUEST_BREAK_GLASS)
    reminders = {n.subject_key: n.payload["text"] for n in sent if n.subject_key.startswith(f"request:{glass.pk}@")}
    assert len(reminders) == 2
    assert all(text.startswith("Still awaiting review: alice took break-glass") for text in reminders.values())
    assert AuditEvent.objects.filter(action="request.post_review_reminded", target_id=str(glass.pk)).count() == 2
    assert not AuditEvent.objects.filter(action="request.post_review_reminded", target_id=str(reviewed.pk)).exists()

    request_post_review(request=glass, reviewer=reviewer, decision="ratify")
    assert requests_announce_post_review(now=start + timedelta(days=5)) == 0


def test_the_announcement_sweep_runs_as_a_recorded_task(glass, settings):
    settings.JITPORTAL_POST_REVIEW_REANNOUNCE = timedelta(seconds=0)
    assert tasks.announce_post_reviews() == 1
    assert SweepRun.objects.get(name="announce-post-reviews").runs == 1


# --- the portal ---------------------------------------------------------------------------------------------


def page_text(response) -> str:
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.content.decode(), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def test_portal_give_access_back_asks_first_then_drops_with_a_post(client, requester, approved):
    client.force_login(requester)
    detail = client.get(reverse("request-detail", args=[approved.pk]))
    drop_url = reverse("request-drop", args=[approved.pk])
    assert drop_url in detail.content.decode()

    confirm = client.get(drop_url)

    assert confirm.status_code == 200
    assert "Give access back?" in page_text(confirm) and "node/web-1" in page_text(confirm)
    assert not Grant.objects.filter(request=approved, revoked_at__isnull=False).exists()  # asking changes nothing

    done = client.post(drop_url, {"reason": "finished early"}, follow=True)

    assert "Access given back" in page_text(done)
    approved.refresh_from_db()
    assert approved.state == AccessRequest.State.REVOKED
    assert set(approved.grants.values_list("revoke_reason", flat=True)) == {"finished early"}
    # Nothing live is left: the page offers no button, and asking again says so.
    assert drop_url not in client.get(reverse("request-detail", args=[approved.pk])).content.decode()
    again = client.post(drop_url, {}, follow=True)
    assert "Not given back" in page_text(again)


def test_portal_gives_back_one_grant(client, requester, approved, web1, web2):
    grant = approved.grants.get(resource=web1)
    client.force_login(requester)
    client.post(reverse("grant-drop", args=[grant.pk]), {})
    assert set(Grant.objects.filter(revoked_at__isnull=False).values_list("resource", flat=True)) == {web1.pk}


def test_portal_drop_needs_the_csrf_token_and_the_owner(requester, reviewer, approved, web1):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(requester)
    assert strict.post(reverse("request-drop", args=[approved.pk]), {}).status_code == 403
    other = Client()
    other.force_login(reviewer)  # may see the request, may not give it back
    assert other.get(reverse("request-drop", args=[approved.pk])).status_code == 404
    assert other.post(reverse("grant-drop", args=[approved.grants.get(resource=web1).pk]), {}).status_code == 404
    assert not Grant.objects.filter(revoked_at__isnull=False).exists()


def test_portal_detail_shows_break_glass_and_its_post_review(client, requester, reviewer, glass):
    client.force_login(requester)
    shown = page_text(client.get(reverse("request-detail", args=[glass.pk])))
    assert "Break-glass post-review pending" in shown
    request_post_review(request=glass, reviewer=reviewer, decision="ratify", reason="real outage")
    shown = page_text(client.get(reverse("request-detail", args=[glass.pk])))
    assert "post-review ratified by bob" in shown and "real outage" in shown


# --- the admin ------------------------------------------------------------------------------------------------

POST_REVIEW = "/admin/requests_app/accessrequest/post-review/"
CHANGELIST = "/admin/requests_app/accessrequest/"


def test_admin_lists_break_glass_awaiting_review_and_post_reviews_after_confirmation(
    client, reviewer, requester, glass, approved, emergency, web1
):
    ratified = request_create(requester=requester, roles=[emergency], resources=[web1], reason="INC-11")
    request_post_review(request=ratified, reviewer=reviewer, decision="ratify")
    client.force_login(reviewer)

    listed = client.get(CHANGELIST, {"queue": "all", "break_glass": "pending"})

    assert listed.status_code == 200
    shown = {str(r.pk) for r in listed.context["cl"].result_list}
    assert shown == {str(glass.pk)}
    assert "Break-glass awaiting review" in page_text(listed)

    change = client.get(f"{CHANGELIST}{glass.pk}/change/")
    assert f"{POST_REVIEW}?decision=reject&amp;ids={glass.pk}" in change.content.decode()
    confirm = client.get(POST_REVIEW, {"decision": "reject", "ids": [str(glass.pk)]})
    assert confirm.status_code == 200 and "Reject 1 break-glass request" in page_text(confirm)
    assert 'value="Reject 1 request"' in confirm.content.decode()
    glass.refresh_from_db()
    assert glass.post_review == PostReview.PENDING  # the confirmation page changes nothing

    # A rejection without a reason is shown again beside the field, nothing done.
    refused = client.post(POST_REVIEW, {"decision": "reject", "ids": [str(glass.pk)], "reason": ""})
    assert refused.status_code == 400
    glass.refresh_from_db()
    assert glass.post_review == PostReview.PENDING

    done = client.post(
        POST_REVIEW, {"decision": "reject", "ids": [str(glass.pk)], "reason": "no incident", "next": CHANGELIST}
    )
    assert done.status_code == 302
    glass.refresh_from_db()
    assert glass.post_review == PostReview.REJECTED and glass.state == AccessRequest.State.REVOKED


def test_admin_post_review_refuses_ones_own_and_the_non_break_glass(client, requester, reviewer, glass, approved):
    requester.groups.add(Group.objects.get(name="sre-leads"))
    client.force_login(requester)
    change = client.get(f"{CHANGELIST}{glass.pk}/change/")
    assert "your own break-glass access" in page_text(change)
    client.post(POST_REVIEW, {"decision": "ratify", "ids": [str(glass.pk)], "reason": "me"})
    glass.refresh_from_db()
    assert glass.post_review == PostReview.PENDING

    client.force_login(reviewer)
    page = client.post(POST_REVIEW, {"decision": "ratify", "ids": [str(approved.pk)], "reason": "x"}, follow=True)
    assert "not break-glass" in page_text(page)
    approved.refresh_from_db()
    assert approved.post_review is None


def test_admin_role_and_channel_pages_carry_the_new_flags(client, superuser, emergency):
    client.force_login(superuser)
    roles = client.get("/admin/accounts/role/", {"break_glass__exact": "1"})
    assert [r.name for r in roles.context["cl"].result_list] == ["prod-emergency"]
    add = client.get("/admin/requests_app/notificationchannel/add/")
    assert 'name="urgent"' in add.content.decode()


def test_the_request_form_says_break_glass_and_requires_a_reason(client, requester, emergency, web1):
    client.force_login(requester)
    url = reverse("request-new") + "?role=prod-emergency"

    form = client.get(url)

    assert "Break-glass: access is granted at once" in page_text(form)
    assert "Reason (required)" in page_text(form)
    refused = client.post(url, {"reason": "", "duration": "3600"})
    assert refused.status_code == 400 and "a reason is required for break-glass access" in page_text(refused)
    assert not AccessRequest.objects.exists()
    sent = client.post(url, {"reason": "INC-9 prod down", "duration": "3600"}, follow=True)
    assert "Break-glass access granted" in page_text(sent)
    assert AccessRequest.objects.get().post_review == PostReview.PENDING


def test_dropping_a_request_costs_the_same_queries_for_two_grants_or_twenty(requester, reviewer, web_ssh):
    def drop_queries(count: int) -> int:
        nodes = [make_resource(f"n{count}-{i}", labels={"env": "prod"}) for i in range(count)]
        made = request_create(requester=requester, roles=[web_ssh], resources=nodes, reason="INC-1")
        request_review(request=made, reviewer=reviewer, decision="approve")
        with CaptureQueriesContext(connection) as captured:
            assert len(request_drop(request=made, user=requester)) == count
        return len(captured)

    assert drop_queries(2) == drop_queries(20)
