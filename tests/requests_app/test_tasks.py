"""Celery tasks and the sweeps behind them, called as plain functions.

Each sweep claims rows with a conditional update, so running it twice does
nothing twice; each works in set-based batches, so its query count does not
grow with the number of rows.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record, audit_record_many
from jitportal import celery_app
from requests_app import tasks
from requests_app.models import AccessRequest, Grant, Notification, NotificationChannel, SweepRun
from requests_app.notifications.delivery import notifications_due
from requests_app.notifications.outbox import DELIVER_MANY_TASK, DELIVER_TASK, DELIVERY_CHUNK
from requests_app.services import (
    grant_revoke,
    grants_end_expired,
    grants_remind_expiring,
    request_create,
    request_expire_pending,
    request_review,
)
from requests_app.sweeps import SWEEPS, sweep_lags
from tests.conftest import audit_sealed_verify, make_role
from tests.requests_app.test_concurrency import run_at_once

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("handed_off")]

Event = NotificationChannel.Event


@pytest.fixture
def ops(db):
    return make_role("prod-ops", approvals=1, max_duration=timedelta(hours=8))


@pytest.fixture
def channel(db):
    return NotificationChannel.objects.create(
        name="requester-news",
        kind=NotificationChannel.Kind.WEBHOOK,
        url="http://127.0.0.1:9/hook",
        secret="k",
        events=[Event.GRANT_ENDED, Event.GRANT_EXPIRING, Event.REQUEST_EXPIRED],
    )


def approved(requester, reviewer, role, *, at, duration="1h", resources=None) -> AccessRequest:
    req = request_create(
        requester=requester, roles=[role], resources=resources or [], reason="INC-1", duration=duration, now=at
    )
    request_review(request=req, reviewer=reviewer, decision="approve", now=at)
    return req


def expired_grants(n: int, *, requester, reviewer, role) -> list[Grant]:
    """``n`` grants of one request, all ended an hour ago; made in bulk so setup stays fast."""
    start = timezone.now() - timedelta(hours=2)
    req = approved(requester, reviewer, role, at=start)
    template = req.grants.get()
    extra = [
        Grant(
            request=req,
            user=requester,
            role=role,
            starts_at=template.starts_at,
            expires_at=template.expires_at + timedelta(seconds=i),
            created_at=start,
        )
        for i in range(1, n)
    ]
    Grant.objects.bulk_create(extra)
    return list(Grant.objects.filter(request=req))


def ended_events() -> list[str]:
    return list(AuditEvent.objects.filter(action="grant.ended").order_by("id").values_list("target_id", flat=True))


# --- expire grants ------------------------------------------------------------------------------


def test_expire_grants_task_marks_ended_audits_and_notifies(requester, reviewer, ops, web1, channel):
    role = make_role("web-ssh")
    req = approved(requester, reviewer, role, at=timezone.now() - timedelta(hours=2), resources=[web1])
    grant = req.grants.get()

    assert tasks.expire_grants() == 1

    grant.refresh_from_db()
    assert grant.ended_at is not None and grant.ended_at >= grant.expires_at
    assert grant.state == Grant.State.EXPIRED
    event = AuditEvent.objects.get(action="grant.ended")
    assert event.target_type == "grant" and event.target_id == str(grant.pk)
    assert event.actor is None
    assert event.data == {
        "request": str(req.pk),
        "user": "alice",
        "role": "web-ssh",
        "resource": "node/web-1",
        "expires_at": grant.expires_at.isoformat(),
        "why": "expired",
    }
    row = Notification.objects.get()
    assert (row.event, row.subject_key) == ("grant.ended", f"grant:{grant.pk}")
    assert row.payload["text"] == "Ended: alice's access to node/web-1 (web-ssh)"
    assert audit_sealed_verify().ok


def test_two_sweeps_in_a_row_end_each_grant_once(requester, reviewer, ops, channel):
    grants = expired_grants(5, requester=requester, reviewer=reviewer, role=ops)
    assert grants_end_expired() == 5
    assert grants_end_expired() == 0
    assert sorted(ended_events()) == sorted(str(g.pk) for g in grants)
    assert Notification.objects.filter(event="grant.ended").count() == 5


def test_a_grant_already_claimed_by_another_sweep_is_left_alone(requester, reviewer, ops):
    grants = expired_grants(3, requester=requester, reviewer=reviewer, role=ops)
    Grant.objects.filter(pk=grants[0].pk).update(ended_at=timezone.now())
    assert grants_end_expired() == 2
    assert str(grants[0].pk) not in ended_events()


def test_active_and_scheduled_grants_are_not_ended_and_revoked_ones_are(requester, reviewer, revoker, ops):
    now = timezone.now()
    active = approved(requester, reviewer, ops, at=now).grants.get()
    scheduled_req = request_create(requester=requester, roles=[ops], reason="x", start_time=now + timedelta(hours=1))
    request_review(request=scheduled_req, reviewer=reviewer, decision="approve")
    scheduled = scheduled_req.grants.get()
    revoked = approved(requester, reviewer, ops, at=now).grants.get()
    grant_revoke(grant=revoked, by=revoker, reason="incident closed")

    assert grants_end_expired() == 1

    assert ended_events() == [str(revoked.pk)]
    assert AuditEvent.objects.get(action="grant.ended").data["why"] == "revoked"
    assert Grant.objects.filter(ended_at__isnull=False).get() == revoked
    for grant in (active, scheduled):
        grant.refresh_from_db()
        assert grant.ended_at is None
    # Once their time comes, they end too.
    assert grants_end_expired(now=now + timedelta(hours=3)) == 2


def test_a_large_backlog_is_ended_in_batches_on_one_unbroken_audit_chain(requester, reviewer, ops, channel, settings):
    settings.JITPORTAL_SWEEP_BATCH_SIZE = 7
    grants = expired_grants(30, requester=requester, reviewer=reviewer, role=ops)
    assert grants_end_expired() == 30
    assert sorted(ended_events()) == sorted(str(g.pk) for g in grants)
    # Oldest first, batch after batch.
    by_expiry = [str(g.pk) for g in sorted(grants, key=lambda g: g.expires_at)]
    assert ended_events() == by_expiry
    assert Notification.objects.count() == 30
    assert audit_sealed_verify().ok


@pytest.mark.parametrize("n", [10, 200])
def test_ending_grants_does_not_query_per_grant(requester, reviewer, ops, channel, n, django_assert_max_num_queries):
    expired_grants(n, requester=requester, reviewer=reviewer, role=ops)
    # 200 grants, each with an audit event and a notification, in the same
    # handful of queries as 10 (SQLite splits a bulk insert every 999 values).
    with django_assert_max_num_queries(25):
        assert grants_end_expired() == n
    assert Notification.objects.count() == n


@pytest.mark.parametrize("with_channel", [False, True], ids=["no channel", "one channel"])
def test_each_batch_of_the_sweep_costs_the_same_few_queries(requester, reviewer, ops, settings, with_channel, request):
    settings.JITPORTAL_SWEEP_BATCH_SIZE = 40
    if with_channel:
        request.getfixturevalue("channel")

    def swept_with_queries(n: int) -> int:
        expired_grants(n, requester=requester, reviewer=reviewer, role=ops)
        with CaptureQueriesContext(connection) as ctx:
            assert grants_end_expired() == n
        return len(ctx.captured_queries)

    one, two, three = swept_with_queries(40), swept_with_queries(80), swept_with_queries(120)
    # Savepoint, lock, claim, read, one audit insert, the channel lookup, release (on
    # PostgreSQL lock, claim, read and insert are one statement); with a channel also its
    # roles, the grants, the channels and roles again for queueing, the outbox insert and
    # the read of its ids. The same for every batch, whatever its size.
    per_batch = 4 if connection.vendor == "postgresql" else 7
    assert two - one == three - two == per_batch + (6 if with_channel else 0)
    assert Notification.objects.count() == (240 if with_channel else 0)
    assert AuditEvent.objects.filter(action="grant.ended").count() == 240


def test_with_no_channel_the_sweep_ends_grants_from_plain_values(requester, reviewer, ops, settings, monkeypatch):
    settings.JITPORTAL_SWEEP_BATCH_SIZE = 50
    grants = expired_grants(120, requester=requester, reviewer=reviewer, role=ops)
    loaded = []
    monkeypatch.setattr(Grant, "from_db", classmethod(lambda cls, *args: loaded.append(args) or None))

    with CaptureQueriesContext(connection) as ctx:
        assert grants_end_expired() == 120

    # No grant became an object, and each batch of 50 costs the same few queries.
    assert loaded == []
    assert len(ctx.captured_queries) <= 3 * 14
    assert sorted(ended_events()) == sorted(str(g.pk) for g in grants)
    event = AuditEvent.objects.filter(action="grant.ended").order_by("id").first()
    assert event.target_type == "grant"
    assert event.data == {
        "request": str(grants[0].request_id),
        "user": "alice",
        "role": ops.name,
        "resource": None,
        "expires_at": min(g.expires_at for g in grants).isoformat(),
        "why": "expired",
    }
    assert not Notification.objects.exists()
    assert not Grant.objects.filter(ended_at__isnull=True).exists()
    assert audit_sealed_verify().ok


postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="sweeps at once need PostgreSQL row locks; set DATABASE_URL=postgres://... to run",
)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@postgres_only
def test_sweeps_running_at_once_end_each_grant_once(requester, reviewer, ops, channel, settings):
    settings.JITPORTAL_SWEEP_BATCH_SIZE = 10
    grants = expired_grants(200, requester=requester, reviewer=reviewer, role=ops)

    results = run_at_once([grants_end_expired] * 4)

    assert sum(results) == 200, results
    assert Counter(ended_events()) == Counter({str(g.pk): 1 for g in grants})
    assert Notification.objects.filter(event="grant.ended").count() == 200
    assert audit_sealed_verify().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@postgres_only
def test_pending_sweeps_running_at_once_expire_each_request_once(requester, ops, channel, settings):
    settings.JITPORTAL_SWEEP_BATCH_SIZE = 5
    past = timezone.now() - timedelta(days=2)
    for _ in range(60):
        request_create(requester=requester, roles=[ops], reason="x", now=past)

    results = run_at_once([request_expire_pending] * 4)

    assert sum(results) == 60, results
    expired = Counter(AuditEvent.objects.filter(action="request.expired").values_list("target_id", flat=True))
    assert len(expired) == 60 and set(expired.values()) == {1}
    assert Notification.objects.filter(event="request.expired").count() == 60
    assert audit_sealed_verify().ok


# --- pending requests ---------------------------------------------------------------------------


def test_expire_pending_task_expires_due_requests_and_tells_the_requester(requester, ops, channel):
    req = request_create(requester=requester, roles=[ops], reason="x", now=timezone.now() - timedelta(days=2))
    assert tasks.expire_pending_requests() == 1
    req.refresh_from_db()
    assert req.state == AccessRequest.State.EXPIRED
    assert req.resolution_reason == "pending time to live passed"
    row = Notification.objects.get()
    assert (row.event, row.subject_key) == ("request.expired", f"request:{req.pk}")
    assert "was not decided in time" in row.payload["text"]
    assert tasks.expire_pending_requests() == 0


def test_expire_pending_respects_its_limit_across_batches(requester, ops, settings):
    settings.JITPORTAL_SWEEP_BATCH_SIZE = 2
    past = timezone.now() - timedelta(days=2)
    for _ in range(5):
        request_create(requester=requester, roles=[ops], reason="x", now=past)
    assert request_expire_pending(limit=3) == 3
    assert request_expire_pending() == 2
    assert AccessRequest.objects.filter(state="expired").count() == 5
    assert AuditEvent.objects.filter(action="request.expired").count() == 5
    assert audit_sealed_verify().ok


@pytest.mark.parametrize("n", [10, 200])
def test_expiring_requests_does_not_query_per_request(requester, ops, web1, channel, n, django_assert_max_num_queries):
    past = timezone.now() - timedelta(days=2)
    role = make_role("web-ssh")
    for _ in range(n):
        request_create(requester=requester, roles=[role], resources=[web1], reason="x", now=past)
    with django_assert_max_num_queries(25):
        assert request_expire_pending() == n
    assert Notification.objects.filter(event="request.expired").count() == n


# --- reminders ------------------------------------------------------------------------------------


def test_a_grant_is_reminded_once_before_it_ends(requester, reviewer, ops, channel):
    now = timezone.now()
    grant = approved(requester, reviewer, ops, at=now, duration="1h").grants.get()
    assert grants_remind_expiring(now=now + timedelta(minutes=40)) == 0

    at = grant.expires_at - timedelta(minutes=5)
    assert grants_remind_expiring(now=at) == 1
    assert grants_remind_expiring(now=at + timedelta(minutes=1)) == 0

    grant.refresh_from_db()
    assert grant.reminded_at == at
    row = Notification.objects.get()
    assert (row.event, row.subject_key) == ("grant.expiring", f"grant:{grant.pk}")
    assert row.payload["text"] == "Ending in 5m: alice's access to everything prod-ops reaches (prod-ops)"


def test_short_revoked_and_ended_grants_get_no_reminder(requester, reviewer, revoker, ops, channel, settings):
    settings.JITPORTAL_REMINDER_BEFORE = timedelta(minutes=10)
    now = timezone.now()
    short = approved(requester, reviewer, ops, at=now, duration="5m").grants.get()
    revoked = approved(requester, reviewer, ops, at=now, duration="1h").grants.get()
    grant_revoke(grant=revoked, by=revoker, reason="done")
    assert grants_remind_expiring(now=short.expires_at - timedelta(minutes=1)) == 0
    assert grants_remind_expiring(now=revoked.expires_at - timedelta(minutes=1)) == 0
    assert not Notification.objects.filter(event="grant.expiring").exists()


def test_reminders_do_not_query_per_grant(requester, reviewer, ops, channel, django_assert_max_num_queries):
    grants = expired_grants(50, requester=requester, reviewer=reviewer, role=ops)
    at = min(g.expires_at for g in grants) - timedelta(minutes=5)
    # Five minutes after they were due, so each is also audited as late: in the same two queries for all 50.
    with django_assert_max_num_queries(17):
        assert grants_remind_expiring(now=at) == 50
    assert AuditEvent.objects.filter(action="grant.reminded_late").count() == 50


# --- notifications retry sweep ------------------------------------------------------------------------


def test_retry_sweep_hands_out_due_rows_only(requester, reviewer, ops, channel, handed_off, settings):
    expired_grants(3, requester=requester, reviewer=reviewer, role=ops)
    grants_end_expired()
    due, later, claimed = Notification.objects.order_by("pk")
    now = timezone.now()
    Notification.objects.filter(pk=later.pk).update(next_attempt_at=now + timedelta(minutes=5))
    Notification.objects.filter(pk=claimed.pk).update(claimed_until=now + timedelta(minutes=5))
    Notification.objects.filter(pk__in=[later.pk, claimed.pk]).update(attempts=1)

    assert tasks.retry_notifications() == 1

    assert handed_off == [
        {"args": ([due.pk],), "expires": settings.JITPORTAL_NOTIFICATION_LEASE_SECONDS, "retry": False}
    ]


def test_retry_sweep_leaves_rows_still_waiting_in_the_queue(
    requester, reviewer, ops, channel, handed_off, settings, django_capture_on_commit_callbacks
):
    expired_grants(3, requester=requester, reviewer=reviewer, role=ops)
    with django_capture_on_commit_callbacks(execute=True):
        grants_end_expired()
    # The sweep's own commit handed all three to the (recording) broker just now.
    fresh, stale, never = Notification.objects.order_by("pk")
    assert all(row.handed_off_at is not None for row in (fresh, stale, never))
    now = timezone.now()
    lease = timedelta(seconds=settings.JITPORTAL_NOTIFICATION_LEASE_SECONDS)
    Notification.objects.filter(pk=stale.pk).update(handed_off_at=now - lease - timedelta(seconds=1))
    Notification.objects.filter(pk=never.pk).update(handed_off_at=None)
    handed_off.clear()

    assert tasks.retry_notifications() == 2

    assert sorted(pk for call in handed_off for pk in call["args"][0]) == sorted([stale.pk, never.pk])
    # Handed out again: a second run at once finds nothing lost.
    handed_off.clear()
    assert tasks.retry_notifications() == 0
    assert handed_off == []


def test_a_thousand_rows_waiting_in_the_queue_get_no_redundant_tasks(
    requester, reviewer, ops, channel, handed_off, django_capture_on_commit_callbacks
):
    expired_grants(1000, requester=requester, reviewer=reviewer, role=ops)
    with django_capture_on_commit_callbacks(execute=True):
        grants_end_expired()
    # Every row handed off once, DELIVERY_CHUNK to a task: a few publishes, not one per message.
    handed = [pk for call in handed_off for pk in call["args"][0]]
    assert sorted(handed) == sorted(Notification.objects.values_list("pk", flat=True))
    assert len(handed) == 1000
    assert len(handed_off) == 1000 // DELIVERY_CHUNK
    handed_off.clear()
    assert tasks.retry_notifications() == 0
    assert handed_off == []


def test_a_failed_hand_off_leaves_the_row_for_the_retry_sweep(
    requester, reviewer, ops, channel, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(*args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(tasks.deliver_notifications, "apply_async", broker_down)
    expired_grants(2, requester=requester, reviewer=reviewer, role=ops)
    with django_capture_on_commit_callbacks(execute=True):
        assert grants_end_expired() == 2
    assert list(Notification.objects.values_list("handed_off_at", flat=True)) == [None, None]
    assert len(notifications_due()) == 2


# --- sweep runs and lag ---------------------------------------------------------------------------


def test_each_sweep_task_records_its_run_and_the_lag_of_its_oldest_row(requester, reviewer, ops, channel, settings):
    grants = expired_grants(3, requester=requester, reviewer=reviewer, role=ops)
    oldest = min(g.expires_at for g in grants)
    before = timezone.now()

    assert tasks.expire_grants() == 3
    assert tasks.expire_grants() == 0

    run = SweepRun.objects.get(name="expire-grants")
    after = timezone.now()
    assert run.runs == 2 and run.rows == 0 and run.lag_seconds == 0
    assert before <= run.started_at <= run.finished_at <= after
    # The first run found the oldest grant an hour late; the worst is kept.
    assert (before - oldest).total_seconds() <= run.max_lag_seconds <= (after - oldest).total_seconds()
    tasks.expire_pending_requests()
    tasks.remind_expiring_grants()
    tasks.announce_post_reviews()
    tasks.retry_notifications()
    assert set(SweepRun.objects.values_list("name", flat=True)) == set(SWEEPS)
    # Every lifecycle sweep is scheduled; beat's other entries keep their own records (the token table,
    # the audit log's seal and checkpoints), since their apps sit below this one.
    assert set(settings.CELERY_BEAT_SCHEDULE) - set(SWEEPS) == {
        "delete-expired-tokens",
        "seal-audit",
        "checkpoint-audit",
    }


def test_sweep_lags_read_the_backlog_live_without_a_run(requester, reviewer, ops):
    grants = expired_grants(2, requester=requester, reviewer=reviewer, role=ops)
    now = timezone.now()
    lags = sweep_lags(now=now)
    assert lags["expire-grants"] == (now - min(g.expires_at for g in grants)).total_seconds()
    assert lags["expire-pending-requests"] == lags["remind-expiring-grants"] == 0
    grants_end_expired(now=now)
    assert sweep_lags(now=now)["expire-grants"] == 0


# --- reminders late or missed ---------------------------------------------------------------------


def test_a_reminder_due_during_a_stall_is_sent_late_and_audited_so(requester, reviewer, ops, channel, settings):
    settings.JITPORTAL_SWEEP_INTERVAL_SECONDS = 30
    grant = approved(requester, reviewer, ops, at=timezone.now(), duration="1h").grants.get()
    on_time = grant.expires_at - settings.JITPORTAL_REMINDER_BEFORE + timedelta(seconds=10)
    assert grants_remind_expiring(now=on_time) == 1
    assert not AuditEvent.objects.filter(action="grant.reminded_late").exists()

    other = approved(requester, reviewer, ops, at=timezone.now(), duration="2h").grants.get()
    late = other.expires_at - timedelta(minutes=2)
    assert grants_remind_expiring(now=late) == 1
    event = AuditEvent.objects.get(action="grant.reminded_late")
    assert event.target_id == str(other.pk)
    assert event.data["due_at"] == (other.expires_at - settings.JITPORTAL_REMINDER_BEFORE).isoformat()
    assert Notification.objects.filter(event="grant.expiring", subject_key=f"grant:{other.pk}").exists()


def test_a_reminder_window_missed_entirely_is_recorded_when_the_grant_ends(requester, reviewer, revoker, ops, channel):
    now = timezone.now()
    missed = approved(requester, reviewer, ops, at=now - timedelta(hours=2), duration="1h").grants.get()
    short = approved(requester, reviewer, ops, at=now - timedelta(hours=2), duration="5m").grants.get()
    reminded = approved(requester, reviewer, ops, at=now - timedelta(hours=2), duration="90m").grants.get()
    grants_remind_expiring(now=reminded.expires_at - timedelta(minutes=9))
    revoked = approved(requester, reviewer, ops, at=now, duration="1h").grants.get()
    grant_revoke(grant=revoked, by=revoker, reason="done")

    # The sweep never saw the reminder window of `missed`: it never sends it, but says so.
    assert grants_remind_expiring(now=now) == 0
    assert grants_end_expired(now=now) == 4

    (event,) = AuditEvent.objects.filter(action="grant.reminder_missed")
    assert event.target_id == str(missed.pk)
    assert not Notification.objects.filter(event="grant.expiring", subject_key=f"grant:{missed.pk}").exists()
    assert {short.pk, reminded.pk, revoked.pk}.isdisjoint({int(event.target_id)})
    assert audit_sealed_verify().ok


@pytest.mark.parametrize("micro", [0, 7], ids=["whole second", "with a fraction"])
def test_the_ended_and_missed_events_hold_the_times_as_isoformat_writes_them(
    requester, reviewer, ops, web1, micro, settings
):
    # PostgreSQL formats these in SQL; they must read exactly as Python's isoformat() of the stored times.
    at = (timezone.now() - timedelta(hours=3)).replace(microsecond=micro)
    grant = approved(requester, reviewer, ops, at=at, duration="1h", resources=[web1]).grants.get()
    Grant.objects.filter(pk=grant.pk).update(starts_at=at, expires_at=at + timedelta(hours=1))
    grant.refresh_from_db()

    assert grants_end_expired() == 1

    ended = AuditEvent.objects.get(action="grant.ended")
    assert ended.data["expires_at"] == grant.expires_at.isoformat()
    assert ("." in ended.data["expires_at"]) == bool(micro)
    assert ended.data["resource"] == f"node/{web1.name}" and ended.data["user"] == requester.username
    missed = AuditEvent.objects.get(action="grant.reminder_missed")
    assert (missed.target_type, missed.target_id, missed.actor_username) == ("grant", str(grant.pk), "")
    assert missed.data == {
        "user": requester.username,
        "due_at": (grant.expires_at - settings.JITPORTAL_REMINDER_BEFORE).isoformat(),
    }
    # Ended first, then the missed reminder, as one grant's pair.
    assert list(AuditEvent.objects.filter(target_type="grant").order_by("id").values_list("action", flat=True)) == [
        "grant.ended",
        "grant.reminder_missed",
    ]
    assert audit_sealed_verify().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@postgres_only
def test_claim_statements_racing_with_no_channel_end_and_audit_each_grant_once(requester, reviewer, ops, settings):
    # No channel: each batch is the single claim-and-audit statement and nothing else.
    settings.JITPORTAL_SWEEP_BATCH_SIZE = 25
    grants = expired_grants(400, requester=requester, reviewer=reviewer, role=ops)

    results = run_at_once([grants_end_expired] * 6)

    assert sum(results) == 400, results
    assert Counter(ended_events()) == Counter({str(g.pk): 1 for g in grants})
    missed = Counter(AuditEvent.objects.filter(action="grant.reminder_missed").values_list("target_id", flat=True))
    assert missed == Counter({str(g.pk): 1 for g in grants})
    assert not Grant.objects.filter(ended_at__isnull=True).exists()
    assert audit_sealed_verify().ok


# --- audit_record_many ------------------------------------------------------------------------------


def test_audit_record_many_chains_events_in_order(requester):
    audit_record(action="first", actor=requester)
    assert audit_record_many({"action": f"bulk.{i}", "target_type": "x", "target_id": str(i)} for i in range(3)) == 3
    audit_record(action="last")
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["first", "bulk.0", "bulk.1", "bulk.2", "last"]
    assert audit_sealed_verify().ok
    assert audit_record_many([]) == 0


# --- the Celery app and beat --------------------------------------------------------------------------


def test_notifications_name_the_delivery_task_the_worker_registers():
    # Handed off by name (the task module sits above notifications), so the name must stay true.
    assert celery_app.tasks[DELIVER_TASK].name == tasks.deliver_notification.name == DELIVER_TASK
    assert celery_app.tasks[DELIVER_MANY_TASK].name == tasks.deliver_notifications.name == DELIVER_MANY_TASK


def test_beat_runs_every_sweep_and_each_run_expires_before_the_next(settings):
    # What a worker does at start: import every app's tasks.py.
    celery_app.loader.import_default_modules()
    schedule = settings.CELERY_BEAT_SCHEDULE
    # What a starting worker does: import every app's tasks.py.
    celery_app.loader.import_default_modules()
    assert {entry["task"] for entry in schedule.values()} == {
        "requests_app.tasks.expire_grants",
        "requests_app.tasks.expire_pending_requests",
        "requests_app.tasks.remind_expiring_grants",
        "requests_app.tasks.announce_post_reviews",
        "requests_app.tasks.retry_notifications",
        "accounts.tasks.delete_expired_tokens",
        "audit.tasks.seal_audit",
        "audit.tasks.checkpoint_audit",
    }
    for entry in schedule.values():
        assert entry["task"] in celery_app.tasks
        assert 0 < entry["options"]["expires"] < entry["schedule"]


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("requests_app.tasks.expire_grants", "sweeps"),
        ("requests_app.tasks.expire_pending_requests", "sweeps"),
        ("requests_app.tasks.remind_expiring_grants", "sweeps"),
        ("requests_app.tasks.announce_post_reviews", "sweeps"),
        ("requests_app.tasks.retry_notifications", "sweeps"),
        ("audit.tasks.seal_audit", "sweeps"),
        ("audit.tasks.checkpoint_audit", "sweeps"),
        ("accounts.tasks.delete_expired_tokens", "sweeps"),
        ("requests_app.tasks.deliver_notification", "deliveries"),
        ("requests_app.tasks.deliver_notifications", "deliveries"),
    ],
)
def test_sweeps_and_deliveries_are_routed_to_queues_of_their_own(task, queue, settings):
    # Production starts one worker per queue by these names (README, Production).
    prefix = settings.CELERY_TASK_DEFAULT_QUEUE
    expected = queue if prefix == "celery" else f"{prefix}-{queue}"
    assert celery_app.amqp.router.route({}, task)["queue"].name == expected
    # A worker started without -Q consumes both, as `make run`'s single worker does.
    assert expected in {q.name for q in celery_app.amqp.queues.values()}


def test_every_scheduled_task_goes_to_the_sweeps_queue(settings):
    # Production runs workers for `sweeps` and `deliveries` only: a beat entry
    # routed anywhere else would be sent and never run.
    sweeps = settings.JITPORTAL_SWEEP_QUEUE
    routed = {
        name: celery_app.amqp.router.route({}, e["task"])["queue"].name
        for name, e in settings.CELERY_BEAT_SCHEDULE.items()
    }
    assert routed == dict.fromkeys(settings.CELERY_BEAT_SCHEDULE, sweeps)


def test_celery_reads_django_settings_and_keeps_no_results(settings):
    assert celery_app.conf.broker_url == settings.CELERY_BROKER_URL
    assert celery_app.conf.task_ignore_result is True
    assert celery_app.conf.result_backend is None
    assert celery_app.conf.task_default_queue == settings.CELERY_TASK_DEFAULT_QUEUE


def test_a_role_based_grant_ends_naming_no_resource(requester, reviewer, ops):
    expired_grants(1, requester=requester, reviewer=reviewer, role=ops)
    grants_end_expired()
    assert AuditEvent.objects.get(action="grant.ended").data["resource"] is None
