"""Notifications: the outbox written with each event, the platforms' formats, delivery with retries.

Delivery goes to a real HTTP receiver on 127.0.0.1 started by the test; the
broker is never used (``apply_async`` is replaced), the tasks' work is called
as plain functions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection, transaction
from django.test import override_settings
from django.urls import reverse
from django.utils import formats, timezone

from audit.models import AuditEvent
from jitportal.crypto import decrypt
from requests_app import tasks
from requests_app.models import AccessRequest, Grant, Notification, NotificationChannel
from requests_app.notifications import formats as notif
from requests_app.notifications.delivery import backoff, notification_deliver, notifications_due
from requests_app.notifications.outbox import notify
from requests_app.services import grant_revoke, grants_end_expired, request_create, request_review
from tests.conftest import make_role, make_user
from tests.integration.receiver import Receiver
from tests.requests_app.test_concurrency import run_at_once

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("handed_off")]

Event = NotificationChannel.Event
Kind = NotificationChannel.Kind
Status = Notification.Status
SLACK_TOKEN_PATH = "/services/T000/B000/XXXXsecretTOKENxxxx"
SECRET = "s3cret-signing-key"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def make_channel(name: str, kind: str, events: list[str], **fields) -> NotificationChannel:
    roles = fields.pop("roles", [])
    channel = NotificationChannel.objects.create(name=name, kind=kind, events=events, **fields)
    channel.roles.set(roles)
    return channel


@pytest.fixture
def ops(db):
    return make_role("prod-ops", approvals=1)


@pytest.fixture
def slack(receiver):
    return make_channel("sre-slack", Kind.SLACK, [Event.REQUEST_CREATED], url=receiver.url(SLACK_TOKEN_PATH))


def create(requester, role, reason="INC-4211 disk full on web-1", **kwargs) -> AccessRequest:
    return request_create(requester=requester, roles=[role], reason=reason, duration="30m", **kwargs)


def admin_link(req: AccessRequest) -> str:
    return f"http://127.0.0.1:8000/admin/requests_app/accessrequest/{req.pk}/change/"


def own_page(req: AccessRequest) -> str:
    return f"http://127.0.0.1:8000/requests/{req.pk}/"


def delivered(receiver, path):
    return [json.loads(r.body) for r in receiver.on(path)]


# --- queueing: the outbox row is part of the event's transaction ------------------------


def test_a_new_request_queues_one_row_per_channel_that_wants_it(requester, ops, receiver):
    other_role = make_role("other")
    wanted = make_channel("all", Kind.SLACK, [Event.REQUEST_CREATED], url=receiver.url("/a"))
    for_role = make_channel(
        "ops-only", Kind.WEBHOOK, [Event.REQUEST_CREATED], url=receiver.url("/b"), secret=SECRET, roles=[ops]
    )
    make_channel("other-role", Kind.SLACK, [Event.REQUEST_CREATED], url=receiver.url("/c"), roles=[other_role])
    make_channel("other-event", Kind.SLACK, [Event.GRANT_ENDED], url=receiver.url("/d"))
    make_channel("off", Kind.SLACK, [Event.REQUEST_CREATED], url=receiver.url("/e"), enabled=False)

    req = create(requester, ops)

    rows = Notification.objects.order_by("channel__name")
    assert [(n.channel, n.event, n.subject_key, n.status) for n in rows] == [
        (wanted, "request.created", f"request:{req.pk}", Status.PENDING),
        (for_role, "request.created", f"request:{req.pk}", Status.PENDING),
    ]


def test_rows_roll_back_with_the_event(requester, ops, slack):
    # The block is the transaction the failure rolls back.
    with pytest.raises(RuntimeError), transaction.atomic():  # noqa: PT012
        create(requester, ops)
        assert Notification.objects.count() == 1
        raise RuntimeError("the caller's transaction fails after the event")
    assert not Notification.objects.exists()
    assert not AccessRequest.objects.exists()


def test_delivery_is_handed_to_a_worker_only_after_commit(
    requester, ops, slack, handed_off, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        create(requester, ops)
    assert handed_off == []
    for callback in callbacks:
        callback()
    row = Notification.objects.get()
    assert handed_off == [{"args": ([row.pk],), "retry": False}]


def test_a_handed_off_list_is_delivered_row_by_row(requester, ops, slack, receiver, handed_off):
    rows = [Notification.objects.get(subject_key=f"request:{create(requester, ops).pk}").pk for _ in range(3)]

    assert tasks.deliver_notifications(rows) == 3

    assert set(Notification.objects.values_list("status", flat=True)) == {Status.DELIVERED}
    assert [r.headers["X-Jitportal-Delivery"] for r in receiver.on(SLACK_TOKEN_PATH)] == [str(pk) for pk in rows]
    assert handed_off == []


def test_a_slow_receiver_sends_the_rest_of_a_list_back_to_the_queue(
    requester, ops, slack, receiver, handed_off, settings
):
    rows = [Notification.objects.get(subject_key=f"request:{create(requester, ops).pk}").pk for _ in range(3)]
    # Half a lease is the task's budget: the first answer alone uses it up.
    settings.JITPORTAL_NOTIFICATION_LEASE_SECONDS = 0.4
    receiver.delay[SLACK_TOKEN_PATH] = 0.3

    assert tasks.deliver_notifications(rows) == 1

    first, *rest = Notification.objects.filter(pk__in=rows).order_by("pk")
    assert first.status == Status.DELIVERED
    assert len(receiver.on(SLACK_TOKEN_PATH)) == 1
    # The rest are untouched, handed off again as one task and stamped, so the retry sweep leaves them be.
    assert [(r.status, r.attempts, r.claimed_until) for r in rest] == [(Status.PENDING, 0, None)] * 2
    assert handed_off == [{"args": (rows[1:],), "retry": False}]
    assert all(r.handed_off_at is not None for r in rest)


def test_a_broker_that_is_down_loses_nothing(
    requester, ops, slack, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(tasks.deliver_notifications, "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        req = create(requester, ops)
    assert AccessRequest.objects.filter(pk=req.pk).exists()
    row = Notification.objects.get()
    assert row.status == Status.PENDING
    assert notifications_due() == [row.pk]
    assert "retry sweep will send" in caplog.text


def test_the_same_event_is_queued_once_per_channel(requester, ops, slack):
    req = create(requester, ops)
    notify(event=Event.REQUEST_CREATED, access_request=req)
    assert Notification.objects.count() == 1


def test_resolutions_are_queued_for_the_requester(requester, reviewer, ops, receiver):
    make_channel("requester-news", Kind.SLACK, [Event.REQUEST_APPROVED, Event.REQUEST_DENIED], url=receiver.url("/x"))
    approved = create(requester, ops)
    request_review(request=approved, reviewer=reviewer, decision="approve", reason="matches the incident")
    denied = create(requester, ops)
    request_review(request=denied, reviewer=reviewer, decision="deny", reason="not during the freeze")

    rows = {n.event: n for n in Notification.objects.all()}
    assert set(rows) == {"request.approved", "request.denied"}
    assert rows["request.approved"].subject_key == f"request:{approved.pk}"
    assert (
        "Approved: alice's request for prod-ops (role-based), 30m of access" in rows["request.approved"].payload["text"]
    )
    assert "not during the freeze" in json.dumps(rows["request.denied"].payload)


def test_an_auto_approved_request_tells_the_requester_not_the_reviewers(requester, receiver):
    role = make_role("staging", auto_approve=True)
    make_channel("both", Kind.SLACK, [Event.REQUEST_CREATED, Event.REQUEST_APPROVED], url=receiver.url("/x"))
    request_create(requester=requester, roles=[role])
    assert list(Notification.objects.values_list("event", flat=True)) == ["request.approved"]


def test_expiry_found_by_a_late_review_is_announced(requester, reviewer, ops, receiver):
    make_channel("expired", Kind.SLACK, [Event.REQUEST_EXPIRED], url=receiver.url("/x"))
    now = timezone.now()
    req = create(requester, ops, now=now)
    with pytest.raises(Exception, match="expired"):
        request_review(request=req, reviewer=reviewer, decision="approve", now=now + timedelta(days=2))
    assert Notification.objects.get().subject_key == f"request:{req.pk}"


# --- what the messages look like ------------------------------------------------------------


def test_slack_message_says_who_what_why_how_long_and_links_to_the_queue(requester, ops, slack, receiver):
    requester.first_name, requester.last_name = "Alice", "Anders"
    requester.save()
    req = create(requester, ops)

    assert notification_deliver(notification_id=Notification.objects.get().pk) == Status.DELIVERED

    (body,) = delivered(receiver, SLACK_TOKEN_PATH)
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("Alice Anders (alice) requests prod-ops (role-based) for 30m")
    assert f"<{admin_link(req)}|Open in jitportal>" in body["text"]
    header, facts, why, actions = body["blocks"]
    assert header["text"]["type"] == "mrkdwn"
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in facts["fields"]}
    assert fields["*Requester*"] == "Alice Anders (alice)"
    assert fields["*Roles*"] == "prod-ops"
    assert fields["*Duration*"] == "30m"
    assert fields["*Approvals needed*"] == "1"
    assert why["text"]["text"] == "*Reason*\n>INC-4211 disk full on web-1"
    assert actions["elements"][0]["url"] == admin_link(req)
    assert admin_link(req).endswith(reverse("admin:requests_app_accessrequest_change", args=[req.pk]))


def test_reviewers_are_linked_to_the_admin_queue_and_requesters_to_their_own_page(requester, reviewer, ops, receiver):
    make_channel("s", Kind.SLACK, [Event.REQUEST_CREATED, Event.REQUEST_APPROVED], url=receiver.url("/s"))
    req = create(requester, ops)
    request_review(request=req, reviewer=reviewer, decision="approve")
    rows = {n.event: n.payload for n in Notification.objects.all()}
    assert rows["request.created"]["blocks"][-1]["elements"][0]["url"] == admin_link(req)
    assert rows["request.approved"]["blocks"][-1]["elements"][0]["url"] == own_page(req)


def test_slack_message_lists_resources_and_escapes_what_the_requester_typed(requester, web1, web2, receiver):
    role = make_role("web-ssh")
    make_channel("s", Kind.SLACK, [Event.REQUEST_CREATED], url=receiver.url("/s"))
    request_create(requester=requester, resources=[web1, web2], roles=[role], reason="<!channel> fix <b>now</b> & then")
    payload = Notification.objects.get().payload
    assert payload["text"].startswith("alice requests web-ssh on node/web-1, node/web-2 for 1h")
    reason = payload["blocks"][2]["text"]["text"]
    assert reason == "*Reason*\n>&lt;!channel&gt; fix &lt;b&gt;now&lt;/b&gt; &amp; then"
    assert "<!channel>" not in json.dumps(payload)


def test_mattermost_message_is_markdown_text_with_an_attachment(requester, ops, receiver):
    make_channel("mm", Kind.MATTERMOST, [Event.REQUEST_CREATED], url=receiver.url("/hooks/abc"))
    req = create(requester, ops, reason="ping @channel about *INC-1*")

    notification_deliver(notification_id=Notification.objects.get().pk)

    (body,) = delivered(receiver, "/hooks/abc")
    assert (
        body["text"] == f"**alice requests prod-ops \\(role-based\\) for 30m**  [Open in jitportal]({admin_link(req)})"
    )
    (attachment,) = body["attachments"]
    assert attachment["title_link"] == admin_link(req)
    assert {"short": True, "title": "Duration", "value": "30m"} in attachment["fields"]
    assert {"short": True, "title": "Requester", "value": "alice"} in attachment["fields"]
    # Markdown in the reason is shown, not applied; "@channel" mentions no one.
    assert attachment["text"] == "**Reason:** ping @\u200bchannel about \\*INC-1\\*"
    assert attachment["fallback"].endswith(admin_link(req))


def test_webhook_body_is_signed_with_the_channel_secret(requester, ops, receiver):
    make_channel("hook", Kind.WEBHOOK, [Event.REQUEST_CREATED], url=receiver.url("/hook"), secret=SECRET)
    req = create(requester, ops)
    row = Notification.objects.get()

    notification_deliver(notification_id=row.pk)

    (got,) = receiver.on("/hook")
    expected = hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Jitportal-Signature"] == f"sha256={expected}"
    assert got.headers["X-Jitportal-Event"] == "request.created"
    assert got.headers["X-Jitportal-Delivery"] == str(row.pk)
    assert got.headers["Content-Type"].startswith("application/json")
    body = json.loads(got.body)
    assert body["event"] == "request.created"
    assert body["request"]["id"] == str(req.pk)
    assert body["request"]["url"] == admin_link(req)
    assert body["request"]["roles"] == ["prod-ops"]
    assert body["request"]["duration"] == 1800
    assert body["grant"] is None
    # A receiver holding another secret rejects it.
    wrong = hmac.new(b"other", got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Jitportal-Signature"] != f"sha256={wrong}"


@pytest.mark.parametrize("kind", [Kind.SLACK, Kind.MATTERMOST, Kind.WEBHOOK])
def test_every_http_delivery_carries_its_idempotency_key(requester, ops, receiver, kind):
    make_channel("c", kind, [Event.REQUEST_CREATED], url=receiver.url("/c"), secret=SECRET)
    create(requester, ops)
    row = Notification.objects.get()
    assert notification_deliver(notification_id=row.pk) == Status.DELIVERED
    (got,) = receiver.on("/c")
    assert got.headers["X-Jitportal-Delivery"] == str(row.pk)


@override_settings(JITPORTAL_NOTIFICATION_TIMEOUT_SECONDS=1, DEFAULT_FROM_EMAIL="jitportal <portal@corp.example>")
def test_every_attempt_at_one_email_has_the_same_message_id(requester, reviewer, ops, monkeypatch):
    make_channel("mail", Kind.EMAIL, [Event.REQUEST_APPROVED])
    req = create(requester, ops)
    request_review(request=req, reviewer=reviewer, decision="approve")
    row = Notification.objects.get()
    assert notification_deliver(notification_id=row.pk) == Status.DELIVERED
    # A resend (say the first attempt's answer was lost) carries the same id.
    Notification.objects.filter(pk=row.pk).update(status=Status.PENDING, next_attempt_at=timezone.now())
    assert notification_deliver(notification_id=row.pk) == Status.DELIVERED
    first, second = mail.outbox
    assert first.extra_headers["Message-ID"] == second.extra_headers["Message-ID"]
    assert first.extra_headers["Message-ID"] == f"<jitportal-notification-{row.pk}@corp.example>"
    assert first.message()["Message-ID"] == first.extra_headers["Message-ID"]


@override_settings(JITPORTAL_NOTIFICATION_TIMEOUT_SECONDS=1, JITPORTAL_NOTIFICATION_MAX_ATTEMPTS=10)
def test_a_receiver_slower_than_the_timeout_gets_duplicates_with_one_key(requester, ops, receiver):
    make_channel("slow", Kind.WEBHOOK, [Event.REQUEST_CREATED], url=receiver.url("/slow"), secret=SECRET)
    receiver.delay["/slow"] = 1.5
    row = queued(requester, ops)

    # Each attempt reaches the receiver, which answers after the sender gave up.
    for _ in range(2):
        row.refresh_from_db()
        assert notification_deliver(notification_id=row.pk, now=row.next_attempt_at) == Status.PENDING
    receiver.delay["/slow"] = 0
    row.refresh_from_db()
    assert notification_deliver(notification_id=row.pk, now=row.next_attempt_at) == Status.DELIVERED

    copies = receiver.on("/slow")
    # The measured cost of a slow receiver: one copy per attempt, two of them duplicates, one key.
    assert len(copies) == 3
    assert {c.headers["X-Jitportal-Delivery"] for c in copies} == {str(row.pk)}
    assert len({c.body for c in copies}) == 1


def test_email_to_the_requester_for_their_events(requester, reviewer, ops):
    make_channel("mail", Kind.EMAIL, [Event.REQUEST_APPROVED])
    req = create(requester, ops)
    request_review(request=req, reviewer=reviewer, decision="approve")

    assert notification_deliver(notification_id=Notification.objects.get().pk) == Status.DELIVERED

    (message,) = mail.outbox
    assert message.to == ["alice@example.com"]
    assert message.subject == "Approved: alice's request for prod-ops (role-based), 30m of access"
    assert own_page(req) in message.body
    assert "INC-4211 disk full on web-1" in message.body


def test_email_for_a_new_request_goes_to_the_eligible_reviewers(requester, reviewer, reviewer2, ops):
    both = make_role("db", reviewers=("dba",))
    make_user("only-sre", groups=("sre-leads",))
    make_user("sre-and-dba", groups=("sre-leads", "dba"))
    make_user("inactive", groups=("sre-leads", "dba"), is_active=False)
    make_channel("mail", Kind.EMAIL, [Event.REQUEST_CREATED])
    request_create(requester=requester, roles=[ops, both], reason="x")
    assert Notification.objects.get().payload["to"] == ["sre-and-dba@example.com"]


def test_email_for_a_new_request_goes_to_email_to_when_set(requester, ops):
    make_channel("mail", Kind.EMAIL, [Event.REQUEST_CREATED], email_to="sre@example.com, oncall@example.com")
    create(requester, ops)
    notification_deliver(notification_id=Notification.objects.get().pk)
    assert mail.outbox[0].to == ["sre@example.com", "oncall@example.com"]


def test_no_email_row_when_there_is_no_one_to_send_to(ops):
    loner = make_user("loner", groups=("engineers",))
    loner.email = ""
    loner.save()
    make_channel("mail", Kind.EMAIL, [Event.REQUEST_CREATED, Event.REQUEST_APPROVED])
    create(loner, ops)
    assert not Notification.objects.exists()


def test_grant_ended_names_the_access_and_who_revoked_it(requester, reviewer, revoker, web1, receiver):
    role = make_role("web-ssh")
    make_channel("ended", Kind.WEBHOOK, [Event.GRANT_ENDED], url=receiver.url("/h"), secret=SECRET)
    req = request_create(requester=requester, resources=[web1], roles=[role], reason="x")
    request_review(request=req, reviewer=reviewer, decision="approve")
    grant_revoke(grant=req.grants.get(), by=revoker, reason="incident closed")
    grants_end_expired()
    payload = Notification.objects.get().payload
    assert payload["text"] == "Revoked: alice's access to node/web-1 (web-ssh) (by ray)"
    assert payload["grant"]["resource"] == "node/web-1"
    assert payload["request"]["url"] == admin_link(req)


# --- delivery: claim, send, record --------------------------------------------------------------


def queued(requester, role) -> Notification:
    create(requester, role)
    return Notification.objects.get()


def test_delivery_marks_the_row_delivered_and_never_sends_it_again(requester, ops, slack, receiver):
    row = queued(requester, ops)
    now = timezone.now()
    assert notification_deliver(notification_id=row.pk, now=now) == Status.DELIVERED
    row.refresh_from_db()
    assert (row.status, row.attempts, row.delivered_at, row.claimed_until) == (Status.DELIVERED, 1, now, None)
    assert notification_deliver(notification_id=row.pk) is None
    assert len(receiver.on(SLACK_TOKEN_PATH)) == 1
    assert notifications_due() == []


@override_settings(JITPORTAL_NOTIFICATION_BACKOFF_SECONDS=30, JITPORTAL_NOTIFICATION_MAX_ATTEMPTS=3)
def test_a_receiver_that_is_down_is_retried_with_backoff_then_given_up(requester, ops, receiver):
    port = receiver.port
    receiver.stop()
    make_channel("down", Kind.SLACK, [Event.REQUEST_CREATED], url=f"http://127.0.0.1:{port}/x")
    row = queued(requester, ops)
    now = timezone.now()

    assert notification_deliver(notification_id=row.pk, now=now) == Status.PENDING
    row.refresh_from_db()
    assert row.attempts == 1
    assert "cannot reach the receiver" in row.last_error
    assert now + timedelta(seconds=15) <= row.next_attempt_at <= now + timedelta(seconds=30)
    assert row.claimed_until is None
    # Not due before its backoff has passed.
    assert notification_deliver(notification_id=row.pk, now=now + timedelta(seconds=14)) is None
    assert notifications_due(now=now + timedelta(seconds=14)) == []

    later = row.next_attempt_at
    assert notifications_due(now=later) == [row.pk]
    assert notification_deliver(notification_id=row.pk, now=later) == Status.PENDING
    row.refresh_from_db()
    assert later + timedelta(seconds=30) <= row.next_attempt_at <= later + timedelta(seconds=60)

    assert notification_deliver(notification_id=row.pk, now=row.next_attempt_at) == Status.FAILED
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.FAILED, 3)
    assert notifications_due(now=later + timedelta(days=1)) == []


def test_a_message_waiting_for_a_retry_arrives_once_the_receiver_is_back(requester, ops, receiver):
    port = receiver.port
    receiver.stop()
    make_channel("flaky", Kind.SLACK, [Event.REQUEST_CREATED], url=f"http://127.0.0.1:{port}/x")
    row = queued(requester, ops)
    notification_deliver(notification_id=row.pk)
    row.refresh_from_db()

    back = Receiver(port=port)
    try:
        assert notification_deliver(notification_id=row.pk, now=row.next_attempt_at) == Status.DELIVERED
        assert len(back.on("/x")) == 1
    finally:
        back.stop()
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == (Status.DELIVERED, 2, "")


@pytest.mark.parametrize(
    ("code", "status"),
    [(500, Status.PENDING), (503, Status.PENDING), (429, Status.PENDING), (404, Status.FAILED), (400, Status.FAILED)],
)
def test_server_errors_are_retried_and_client_errors_are_not(requester, ops, slack, receiver, code, status):
    receiver.status[SLACK_TOKEN_PATH] = code
    row = queued(requester, ops)
    assert notification_deliver(notification_id=row.pk) == status
    row.refresh_from_db()
    assert row.last_error.startswith(f"HTTP {code}")
    # The URL carries the webhook's token: it never lands in the error.
    assert "TOKEN" not in row.last_error


def test_redirects_are_not_followed(requester, ops, slack, receiver):
    receiver.status[SLACK_TOKEN_PATH] = 307
    receiver.headers[SLACK_TOKEN_PATH] = {"Location": receiver.url("/elsewhere")}
    row = queued(requester, ops)
    assert notification_deliver(notification_id=row.pk) == Status.FAILED
    assert receiver.on("/elsewhere") == []


def test_a_claimed_row_is_not_claimed_again_until_its_lease_runs_out(requester, ops, slack, receiver, settings):
    row = queued(requester, ops)
    now = timezone.now()
    lease = timedelta(seconds=settings.JITPORTAL_NOTIFICATION_LEASE_SECONDS)
    # A worker claimed it and died before recording anything.
    Notification.objects.filter(pk=row.pk).update(claimed_until=now + lease)

    assert notification_deliver(notification_id=row.pk, now=now) is None
    assert notifications_due(now=now + lease - timedelta(seconds=1)) == []
    assert receiver.on(SLACK_TOKEN_PATH) == []

    assert notifications_due(now=now + lease) == [row.pk]
    assert notification_deliver(notification_id=row.pk, now=now + lease) == Status.DELIVERED
    assert len(receiver.on(SLACK_TOKEN_PATH)) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="claims at once need PostgreSQL; set DATABASE_URL")
def test_workers_handed_the_same_row_at_once_send_it_once(requester, ops, slack, receiver):
    row = queued(requester, ops)

    results = run_at_once([lambda: notification_deliver(notification_id=row.pk)] * 4)

    assert sorted(results, key=str) == [None, None, None, Status.DELIVERED]
    assert len(receiver.on(SLACK_TOKEN_PATH)) == 1


def test_a_channel_disabled_after_queueing_fails_the_row(requester, ops, slack, receiver):
    row = queued(requester, ops)
    NotificationChannel.objects.filter(pk=slack.pk).update(enabled=False)
    assert notification_deliver(notification_id=row.pk) == Status.FAILED
    row.refresh_from_db()
    assert row.last_error == "the channel is disabled"
    assert receiver.on(SLACK_TOKEN_PATH) == []


def test_the_deliver_task_skips_a_row_that_is_gone():
    assert tasks.deliver_notification(987654) is None


@override_settings(JITPORTAL_NOTIFICATION_BACKOFF_SECONDS=10, JITPORTAL_NOTIFICATION_BACKOFF_MAX_SECONDS=60)
def test_backoff_doubles_with_jitter_up_to_a_ceiling():
    for attempts, ceiling in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        delays = {backoff(attempts).total_seconds() for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempts, delays)
        assert len(delays) > 1, "no jitter"


# --- secrets ----------------------------------------------------------------------------------------


def test_url_and_secret_are_encrypted_at_rest(receiver):
    url = receiver.url(SLACK_TOKEN_PATH)
    channel = make_channel("hook", Kind.WEBHOOK, [], url=url, secret=SECRET)
    with connection.cursor() as cursor:
        cursor.execute("SELECT url, secret FROM requests_app_notificationchannel WHERE id = %s", [channel.pk])
        raw_url, raw_secret = cursor.fetchone()
    assert SECRET not in raw_secret and "TOKEN" not in raw_url
    assert decrypt(raw_url) == url and decrypt(raw_secret) == SECRET
    channel.refresh_from_db()
    assert (channel.url, channel.secret) == (url, SECRET)


def test_mask_url_keeps_the_host_and_hides_the_path():
    assert notif.mask_url("https://hooks.slack.com/services/T0/B0/abc") == "https://hooks.slack.com/…/••••"
    assert notif.mask_url("http://user:pw@127.0.0.1:8799/hooks/abc") == "http://127.0.0.1:8799/…/••••"
    assert notif.mask_url("") == ""
    assert notif.mask_url("not a url") == "••••"
    assert notif.mask_url("https://host:port/TOKEN") == "••••"


# --- admin: channels are write-only for secrets, the outbox is read-only --------------------------


@pytest.fixture
def superuser(db):
    return make_user("root", is_staff=True, is_superuser=True)


def channel_form(**overrides) -> dict:
    data = {
        "name": "sre-hook",
        "kind": Kind.WEBHOOK,
        "enabled": "on",
        "webhook_url": "https://hooks.example.com/services/T0/B0/TOKENabc",
        "signing_secret": SECRET,
        "email_to": "",
        "events": [Event.REQUEST_CREATED, Event.GRANT_ENDED],
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def admin_url(model, view, *args):
    return reverse(f"admin:requests_app_{model._meta.model_name}_{view}", args=args)


def test_admin_creates_a_channel_and_never_shows_its_url_or_secret(client, superuser):
    client.force_login(superuser)
    response = client.post(admin_url(NotificationChannel, "add"), channel_form())
    assert response.status_code == 302, response.content.decode()[:2000]
    channel = NotificationChannel.objects.get()
    assert channel.url == "https://hooks.example.com/services/T0/B0/TOKENabc"
    assert channel.secret == SECRET
    assert channel.events == ["request.created", "grant.ended"]

    pages = [
        client.get(admin_url(NotificationChannel, "changelist")),
        client.get(admin_url(NotificationChannel, "change", channel.pk)),
        client.get(admin_url(NotificationChannel, "history", channel.pk)),
    ]
    for page in pages:
        content = page.content.decode()
        assert page.status_code == 200
        assert "TOKENabc" not in content and SECRET not in content
    assert "https://hooks.example.com/…/••••" in pages[0].content.decode()
    assert "Stored: https://hooks.example.com/…/••••. Leave blank to keep it." in pages[1].content.decode()


def test_admin_blank_fields_keep_the_stored_url_and_secret(client, superuser):
    channel = make_channel(
        "hook", Kind.WEBHOOK, [Event.REQUEST_CREATED], url="https://a.example.com/x/OLD", secret=SECRET
    )
    client.force_login(superuser)
    response = client.post(
        admin_url(NotificationChannel, "change", channel.pk),
        channel_form(name="hook", webhook_url="", signing_secret="", events=[Event.GRANT_ENDED]),
    )
    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.url, channel.secret, channel.events) == ("https://a.example.com/x/OLD", SECRET, ["grant.ended"])

    client.post(
        admin_url(NotificationChannel, "change", channel.pk),
        channel_form(name="hook", webhook_url="https://b.example.com/y/NEW", signing_secret=""),
    )
    channel.refresh_from_db()
    assert (channel.url, channel.secret) == ("https://b.example.com/y/NEW", SECRET)


def test_admin_form_errors_do_not_echo_the_submitted_secret(client, superuser):
    client.force_login(superuser)
    response = client.post(
        admin_url(NotificationChannel, "add"),
        channel_form(webhook_url="ftp://files.example.com/TOKENabc"),
    )
    content = response.content.decode()
    assert response.status_code == 200
    assert "Enter a full http:// or https:// URL." in content
    assert "TOKENabc" not in content and SECRET not in content
    assert not NotificationChannel.objects.exists()


def test_admin_requires_a_url_for_webhooks_and_a_secret_for_signed_ones(client, superuser):
    client.force_login(superuser)
    response = client.post(admin_url(NotificationChannel, "add"), channel_form(webhook_url="", signing_secret=""))
    content = response.content.decode()
    assert "This kind of channel needs a webhook URL." in content
    assert "A generic webhook needs a signing secret." in content


def test_auditors_see_the_channel_masked_and_read_only(client, auditor):
    viewer = auditor
    channel = make_channel(
        "hook", Kind.WEBHOOK, [Event.REQUEST_CREATED], url="https://a.example.com/x/TOKENabc", secret=SECRET
    )
    client.force_login(viewer)
    content = client.get(admin_url(NotificationChannel, "change", channel.pk)).content.decode()
    assert "https://a.example.com/…/••••" in content
    assert "stored (never shown)" in content
    assert "TOKENabc" not in content and SECRET not in content


def test_outbox_admin_shows_status_attempts_error_and_next_attempt_read_only(
    client, superuser, requester, ops, slack, receiver
):
    receiver.status[SLACK_TOKEN_PATH] = 503
    row = queued(requester, ops)
    # An hour ahead, so the next attempt cannot be mistaken for the creation time on the page.
    notification_deliver(notification_id=row.pk, now=timezone.now() + timedelta(hours=1))
    row.refresh_from_db()
    client.force_login(superuser)

    listing = client.get(admin_url(Notification, "changelist")).content.decode()
    for text in ("request.created", "sre-slack", "pending", "HTTP 503 Service Unavailable"):
        assert text in listing
    detail = client.get(admin_url(Notification, "change", row.pk)).content.decode()

    def shown(field: str) -> str:
        match = re.search(rf'field-{field}.*?<div class="readonly">(.*?)</div>', detail, re.S)
        return match.group(1).strip()

    assert shown("status") == "Pending"
    assert shown("attempts") == "1"
    assert shown("last_error").startswith("HTTP 503 Service Unavailable")
    assert shown("next_attempt_at") == formats.localize(timezone.template_localtime(row.next_attempt_at))
    assert "TOKEN" not in listing + detail
    assert client.get(admin_url(Notification, "add")).status_code == 403
    assert client.post(admin_url(Notification, "delete", row.pk), {"post": "yes"}).status_code == 403
    assert Notification.objects.filter(pk=row.pk).exists()


def test_admin_retries_failed_deliveries_only_and_audits_it(client, superuser, requester, ops, slack):
    failed = queued(requester, ops)
    Notification.objects.filter(pk=failed.pk).update(status=Status.FAILED, attempts=10, last_error="HTTP 503")
    delivered = Notification.objects.create(
        channel=failed.channel, event=failed.event, subject_key="request:other", status=Status.DELIVERED, attempts=1
    )
    client.force_login(superuser)
    response = client.post(
        admin_url(Notification, "changelist"),
        {"action": "retry_failed", "_selected_action": [failed.pk, delivered.pk]},
        follow=True,
    )
    assert response.status_code == 200
    failed.refresh_from_db()
    delivered.refresh_from_db()
    assert (failed.status, failed.attempts, failed.claimed_until) == (Status.PENDING, 0, None)
    assert failed.next_attempt_at <= timezone.now()
    assert failed.pk in notifications_due()
    assert (delivered.status, delivered.attempts) == (Status.DELIVERED, 1)
    event = AuditEvent.objects.get(action="notification.retried")
    assert (event.actor_username, event.data) == ("root", {"ids": [failed.pk]})


def test_auditors_read_the_outbox_but_cannot_retry_deliveries(client, requester, ops, slack, auditor):
    failed = queued(requester, ops)
    Notification.objects.filter(pk=failed.pk).update(status=Status.FAILED)
    client.force_login(auditor)
    listing = client.get(admin_url(Notification, "changelist"))
    assert listing.status_code == 200
    assert "retry_failed" not in listing.content.decode()
    client.post(admin_url(Notification, "changelist"), {"action": "retry_failed", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert failed.status == Status.FAILED


def test_grant_rows_in_the_outbox_link_to_the_grant(client, superuser, requester, reviewer, ops, receiver):
    make_channel("ended", Kind.SLACK, [Event.GRANT_ENDED], url=receiver.url("/x"))
    req = create(requester, ops)
    request_review(request=req, reviewer=reviewer, decision="approve")
    grant = Grant.objects.get()
    grants_end_expired(now=grant.expires_at)
    client.force_login(superuser)
    listing = client.get(admin_url(Notification, "changelist")).content.decode()
    assert admin_url(Grant, "change", grant.pk) in listing
