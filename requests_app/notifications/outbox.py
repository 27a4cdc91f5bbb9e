"""The transactional outbox: queueing notifications inside the event's transaction.

Queueing (``notify``, ``notify_many``) runs inside the transaction of the
event it announces and writes one ``Notification`` row per matching channel,
holding the exact message to send; the rows commit or roll back with the
event. After commit each row is handed to a worker (``enqueue_deliveries``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from functools import partial

from celery import current_app
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.models import prefetch_related_objects
from django.utils import timezone

from accounts.selectors import reviewers_of
from audit.services import audit_record
from jitportal.db import insert_rows
from jitportal.errors import DomainError
from requests_app.models import AccessRequest, Grant, Notification, NotificationChannel
from requests_app.notifications.formats import email_payload, mattermost_payload, slack_payload
from requests_app.notifications.messages import Event, Kind, Message, build_message

logger = logging.getLogger(__name__)

# The worker tasks that run notification_deliver (requests_app/tasks.py): one row, or a list of rows in turn.
DELIVER_TASK = "requests_app.tasks.deliver_notification"
DELIVER_MANY_TASK = "requests_app.tasks.deliver_notifications"
# Rows per hand-off: few publishes for a sweep's thousands of messages, yet
# enough tasks that several workers share a burst.
DELIVERY_CHUNK = 50

# Events that tell the requester about their own request or grant.
REQUESTER_EVENTS = {
    Event.REQUEST_APPROVED,
    Event.REQUEST_DENIED,
    Event.REQUEST_EXPIRED,
    Event.GRANT_EXPIRING,
    Event.GRANT_ENDED,
}

# Events every channel marked urgent gets, and gets whatever roles it is limited to.
URGENT_EVENTS = {Event.REQUEST_BREAK_GLASS}

# --- queueing, in the event's transaction --------------------------------------------------

# What a queued row sets; the rest keep their column defaults (NULL lease, hand-off and delivery time).
_OUTBOX_COLUMNS = (
    "channel_id",
    "event",
    "subject_key",
    "payload",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "created_at",
)


def _takes(channel: NotificationChannel, event: str) -> bool:
    # An urgent channel takes every break-glass announcement, whatever its events list.
    return event in (channel.events or []) or (event in URGENT_EVENTS and channel.urgent)


def _channels_for(event: str) -> list[NotificationChannel]:
    # Channels are few: filtering the events list in Python works on every database.
    # Queueing never needs the URL or secret, so they are not even decrypted.
    enabled = NotificationChannel.objects.filter(enabled=True).defer("url", "secret")
    channels = [c for c in enabled if _takes(c, event)]
    prefetch_related_objects(channels, "roles")
    return channels


def notify_wanted(event: str) -> bool:
    """Whether any enabled channel takes ``event``: a sweep builds no message objects when none does."""
    return bool(_channels_for(event))


def _reviewer_emails(access_request: AccessRequest) -> list[str]:
    """Active users eligible to review every role of the request, the requester excluded."""
    users = reviewers_of(list(access_request.roles.all())).exclude(pk=access_request.requester_id).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def _recipients(channel: NotificationChannel, event: str, access_request: AccessRequest) -> list[str]:
    if event in REQUESTER_EVENTS:
        email = access_request.requester.email
        return [email] if email else []
    configured = [a.strip() for a in channel.email_to.split(",") if a.strip()]
    return configured or _reviewer_emails(access_request)


def _render(channel: NotificationChannel, message: Message, access_request: AccessRequest) -> dict | None:
    match channel.kind:
        case Kind.SLACK:
            return slack_payload(message)
        case Kind.MATTERMOST:
            return mattermost_payload(message)
        case Kind.WEBHOOK:
            return message.data
        case Kind.EMAIL:
            recipients = _recipients(channel, message.event, access_request)
            return email_payload(message, recipients) if recipients else None
    return None


def _subject_key(access_request: AccessRequest, grant: Grant | None, suffix: str = "") -> str:
    key = f"grant:{grant.pk}" if grant is not None else f"request:{access_request.pk}"
    return f"{key}{suffix}"


def _wants(channel: NotificationChannel, access_request: AccessRequest, grant: Grant | None, event: str) -> bool:
    if event in URGENT_EVENTS and channel.urgent:
        return True
    role_ids = {r.pk for r in channel.roles.all()}
    if not role_ids:
        return True
    if grant is not None:
        return grant.role_id in role_ids
    return any(r.pk in role_ids for r in access_request.roles.all())


def notify(*, event: str, access_request: AccessRequest, grant: Grant | None = None) -> int:
    """Queue ``event`` about one request (or grant) for every channel that wants it."""
    return notify_many(event=event, subjects=[(access_request, grant)])


def notify_many(
    *,
    event: str,
    subjects: Iterable[tuple[AccessRequest, Grant | None]],
    now: datetime | None = None,
    key_suffix: str = "",
) -> int:
    """Queue ``event`` for many subjects at once; returns how many messages it queued.

    ``key_suffix`` tells a repeated announcement (the daily break-glass one)
    from the first, which the once-per-subject constraint would otherwise drop.

    Call it inside the event's transaction. A constant number of queries
    whatever the number of subjects (grants need ``request__requester``,
    ``role``, ``resource`` and ``revoked_by`` selected). Delivery is handed to
    a worker after commit.
    """
    subjects = list(subjects)
    if not subjects:
        return 0
    channels = _channels_for(event)
    if not channels:
        return 0
    now = now or timezone.now()
    requests = [r for r, g in subjects if g is None]
    if requests:
        prefetch_related_objects(requests, "roles", "resources")
    # Plain rows in database form: building a model instance per message cost more than inserting it.
    at = connection.ops.adapt_datetimefield_value(now)
    pending = Notification.Status.PENDING
    rows: list[tuple] = []
    keys: set[str] = set()
    for access_request, grant in subjects:
        message = build_message(event=event, access_request=access_request, grant=grant, now=now)
        for channel in channels:
            if not _wants(channel, access_request, grant, event):
                continue
            payload = _render(channel, message, access_request)
            if payload is None:
                continue
            key = _subject_key(access_request, grant, key_suffix)
            keys.add(key)
            rows.append((channel.pk, event, key, json.dumps(payload), pending, 0, at, "", at))
    if not rows:
        return 0
    # The unique (channel, event, subject) constraint keeps a replayed event from queuing twice.
    insert_rows(table=Notification._meta.db_table, columns=_OUTBOX_COLUMNS, rows=rows, ignore_conflicts=True)
    pks = list(
        Notification.objects.filter(
            channel__in=channels,
            event=event,
            subject_key__in=keys,
            status=Notification.Status.PENDING,
        ).values_list("pk", flat=True)
    )
    transaction.on_commit(partial(enqueue_deliveries, pks))
    return len(rows)


def enqueue_deliveries(pks: list[int], *, expires: float | None = None) -> int:
    """Hand rows to workers; a lost hand-off only delays a row until the retry sweep finds it.

    Runs after commit, often in a web request: the broker settings bound each
    publish to well under a second, and the first failure stops the loop, so
    a broker that is down or hung delays notifications, never the answer.
    Rows go out ``DELIVERY_CHUNK`` to a task, so a sweep that queues
    thousands of messages makes a few hundred publishes, not thousands.
    """
    # By name: the task module sits above this one (it calls the services that notify).
    deliver = current_app.signature(DELIVER_MANY_TASK)
    sent: list[int] = []
    for start in range(0, len(pks), DELIVERY_CHUNK):
        chunk = list(pks[start : start + DELIVERY_CHUNK])
        try:
            deliver.apply_async((chunk,), expires=expires, retry=False)
        except Exception:  # the broker may be down; the rows are safe in the database
            logger.warning(
                "could not queue delivery of notification %s (and %d more); the retry sweep will send them",
                chunk[0],
                len(pks) - len(sent) - 1,
                exc_info=True,
            )
            break
        sent += chunk
    if sent:
        # Stamped after publishing: a row stamped but never published would wait a lease for nothing.
        Notification.objects.filter(pk__in=sent).update(handed_off_at=timezone.now())
    return len(sent)


def notifications_retry(*, ids: Iterable[int], by, now: datetime | None = None) -> int:
    """Queue failed deliveries again, with a fresh round of attempts; returns how many.

    For after a receiver outage that outlasted the retries. Only ``failed``
    rows move (a conditional update), so a delivered message is never sent twice.
    """
    now = now or timezone.now()
    with transaction.atomic():
        failed = Notification.objects.filter(pk__in=list(ids), status=Notification.Status.FAILED)
        pks = list(failed.values_list("pk", flat=True))
        if not pks:
            return 0
        Notification.objects.filter(pk__in=pks, status=Notification.Status.FAILED).update(
            status=Notification.Status.PENDING, attempts=0, next_attempt_at=now, claimed_until=None
        )
        audit_record(action="notification.retried", actor=by, target_type="notification", data={"ids": pks})
        transaction.on_commit(partial(enqueue_deliveries, pks))
    return len(pks)


def email_channel_ensure(*, name: str, to: list[str], events: list[str]) -> tuple[NotificationChannel, str]:
    """Make an enabled email channel ``name`` send ``events`` to ``to`` (empty: the reviewers / requester).

    Idempotent, for scripts and the demo; returns the channel and what happened
    (``created``, ``updated`` or ``unchanged``). Changes are audited.
    """
    for address in to:
        try:
            validate_email(address)
        except ValidationError:
            raise DomainError(f"{address!r} is not an email address", field="to") from None
    unknown = sorted(set(events) - set(Event.values))
    if unknown:
        raise DomainError(f"unknown events: {', '.join(unknown)}", field="events")
    wanted = {"kind": Kind.EMAIL, "enabled": True, "email_to": ", ".join(to), "events": sorted(set(events))}
    with transaction.atomic():
        channel = NotificationChannel.objects.select_for_update().filter(name=name).first()
        if channel is not None and channel.kind != Kind.EMAIL:
            raise DomainError(f"channel {name} exists and is a {channel.get_kind_display()} channel", field="name")
        if channel is None:
            channel = NotificationChannel.objects.create(name=name, **wanted)
            outcome = "created"
        elif any(getattr(channel, key) != value for key, value in wanted.items()):
            for key, value in wanted.items():
                setattr(channel, key, value)
            channel.save(update_fields=list(wanted))
            outcome = "updated"
        else:
            return channel, "unchanged"
        audit_record(
            action=f"channel.{outcome}",
            target_type="notification_channel",
            target_id=str(channel.pk),
            data={"name": name, **wanted},
        )
    return channel, outcome
