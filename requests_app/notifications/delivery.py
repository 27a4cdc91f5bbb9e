"""Notifications: the transactional outbox and its delivery.

Queueing (``notify``, ``notify_many``) runs inside the transaction of the
event it announces and writes one ``Notification`` row per matching channel,
holding the exact message to send; the rows commit or roll back with the
event. After commit each row is handed to a worker; delivery claims it with a
conditional update that sets a lease, sends with a timeout, and records the
outcome. A failure is retried with exponential backoff and jitter until
``JITPORTAL_NOTIFICATION_MAX_ATTEMPTS``; a worker that dies mid-delivery
leaves a lease that runs out, and the retry sweep hands the row out again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from urllib.parse import urlsplit

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F, Q, prefetch_related_objects
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from accounts.selectors import reviewers_of
from audit.services import audit_record
from jitportal.durations import format_duration
from jitportal.errors import DomainError
from requests_app.models import AccessRequest, Grant, Notification, NotificationChannel

logger = logging.getLogger(__name__)

Event = NotificationChannel.Event
Kind = NotificationChannel.Kind

SIGNATURE_HEADER = "X-Jitportal-Signature"
# The worker task that runs notification_deliver (requests_app/tasks.py).
DELIVER_TASK = "requests_app.tasks.deliver_notification"
RESOURCES_SHOWN = 10
REASON_SHOWN = 1000
# Events that tell the requester about their own request or grant.
REQUESTER_EVENTS = {
    Event.REQUEST_APPROVED,
    Event.REQUEST_DENIED,
    Event.REQUEST_EXPIRED,
    Event.GRANT_EXPIRING,
    Event.GRANT_ENDED,
}


class DeliveryError(Exception):
    """A delivery attempt failed; ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


# --- what a message says ------------------------------------------------------------


@dataclass
class Message:
    """One event about one request (and maybe one grant), before any platform's format."""

    event: str
    title: str
    link: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""
    data: dict = field(default_factory=dict)


def request_admin_url(access_request: AccessRequest) -> str:
    """The request in the reviewer queue, as a full link for messages sent out."""
    path = reverse("admin:requests_app_accessrequest_change", args=[access_request.pk])
    return f"{settings.JITPORTAL_BASE_URL}{path}"


def request_page_url(access_request: AccessRequest) -> str:
    """The requester's own page for the request (the admin is for staff), else the admin's."""
    try:
        path = reverse("request-detail", args=[access_request.pk])
    except NoReverseMatch:
        return request_admin_url(access_request)
    return f"{settings.JITPORTAL_BASE_URL}{path}"


def _person(user) -> str:
    full = user.get_full_name()
    return f"{full} ({user.username})" if full else user.username


def _when(value: datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M %Z") if value else ""


def _resource_refs(access_request: AccessRequest) -> list[str]:
    return sorted(r.ref for r in access_request.resources.all())


def _summarise(refs: list[str]) -> str:
    if len(refs) > RESOURCES_SHOWN:
        return f"{', '.join(refs[:RESOURCES_SHOWN])} and {len(refs) - RESOURCES_SHOWN} more"
    return ", ".join(refs)


def _truncate(text: str, limit: int = REASON_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _grant_target(grant: Grant) -> str:
    return grant.resource.ref if grant.resource_id else f"everything {grant.role.name} reaches"


def build_message(*, event: str, access_request: AccessRequest, grant: Grant | None, now: datetime) -> Message:
    """Who, what, why, how long, and the link: the same facts for every platform."""
    requester = access_request.requester
    who = _person(requester)
    admin_link = request_admin_url(access_request)
    # Reviewers act in the admin queue; requesters read their own page.
    link = admin_link if event == Event.REQUEST_CREATED else request_page_url(access_request)
    request_data = {
        "id": str(access_request.pk),
        "url": admin_link,
        "requester": requester.username,
        "reason": access_request.reason,
        "state": access_request.state,
        "duration": int(access_request.duration.total_seconds()),
    }
    facts: list[tuple[str, str]] = [("Requester", who)]
    if grant is None:
        roles = sorted(r.name for r in access_request.roles.all())
        refs = _resource_refs(access_request)
        what = f"{', '.join(roles)} on {_summarise(refs)}" if refs else f"{', '.join(roles)} (role-based)"
        request_data |= {
            "roles": roles,
            "resources": refs,
            "start_time": access_request.start_time.isoformat() if access_request.start_time else None,
            "approvals_required": access_request.approvals_required,
            "pending_expires_at": access_request.pending_expires_at.isoformat(),
            "resolution_reason": access_request.resolution_reason,
        }
        facts += [
            ("Roles", ", ".join(roles)),
            ("Resources", _summarise(refs) if refs else "(role-based: everything the roles reach)"),
            ("Duration", format_duration(access_request.duration)),
        ]
        if access_request.start_time:
            facts.append(("Starts", _when(access_request.start_time)))
    else:
        what = f"{_grant_target(grant)} ({grant.role.name})"
        facts += [
            ("Access", what),
            ("Until", _when(grant.expires_at)),
        ]

    duration = format_duration(access_request.duration)
    resolution = access_request.resolution_reason
    match event:
        case Event.REQUEST_CREATED:
            title = f"{who} requests {what} for {duration}"
            facts.append(("Approvals needed", str(access_request.approvals_required)))
            facts.append(("Decide by", _when(access_request.pending_expires_at)))
        case Event.REQUEST_APPROVED:
            title = f"Approved: {who}'s request for {what}, {duration} of access"
            if resolution:
                facts.append(("Decision", resolution))
        case Event.REQUEST_DENIED:
            title = f"Denied: {who}'s request for {what}"
            if resolution:
                facts.append(("Decision", resolution))
        case Event.REQUEST_EXPIRED:
            title = f"Expired: {who}'s request for {what} was not decided in time"
        case Event.GRANT_EXPIRING:
            left = format_duration(max(grant.expires_at - now, timedelta(seconds=1)))
            title = f"Ending in {left}: {who}'s access to {what}"
        case Event.GRANT_ENDED if grant.revoked_at is not None:
            by = grant.revoked_by.username if grant.revoked_by_id else "staff"
            title = f"Revoked: {who}'s access to {what} (by {by})"
            facts.append(("Revoke reason", grant.revoke_reason))
        case Event.GRANT_ENDED:
            title = f"Ended: {who}'s access to {what}"
        case _:
            raise ValueError(f"unknown event {event!r}")

    data = {
        "event": event,
        "occurred_at": now.isoformat(),
        "text": title,
        "link": link,
        "request": request_data,
        "grant": None,
    }
    if grant is not None:
        data["grant"] = {
            "id": grant.pk,
            "role": grant.role.name,
            "resource": grant.resource.ref if grant.resource_id else None,
            "starts_at": grant.starts_at.isoformat(),
            "expires_at": grant.expires_at.isoformat(),
            "revoked_at": grant.revoked_at.isoformat() if grant.revoked_at else None,
        }
    return Message(event=event, title=title, link=link, facts=facts, reason=_truncate(access_request.reason), data=data)


# --- each platform's format ----------------------------------------------------------


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads <...> as links and mentions (<!channel>); only these three need escaping.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(message: Message) -> dict:
    """An incoming-webhook body: ``text`` for notifications and clients without blocks, ``blocks`` to read."""
    esc = _slack_escape
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{esc(message.title)}*"}},
        {
            "type": "section",
            # Slack allows at most ten fields of 2000 characters.
            "fields": [
                {"type": "mrkdwn", "text": _truncate(f"*{esc(label)}*\n{esc(value)}", 2000)}
                for label, value in message.facts[:10]
            ],
        },
    ]
    if message.reason:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n>{esc(message.reason)}"}})
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open in jitportal"},
                    "url": message.link,
                }
            ],
        }
    )
    return {"text": f"{esc(message.title)} <{message.link}|Open in jitportal>", "blocks": blocks}


_MARKDOWN_SPECIAL = str.maketrans({c: f"\\{c}" for c in "\\`*_~[]()#|<>"})


def _markdown_escape(text: str) -> str:
    # A zero-width space after "@" keeps user text from mentioning @channel or @all.
    return text.translate(_MARKDOWN_SPECIAL).replace("@", "@\u200b")


def mattermost_payload(message: Message) -> dict:
    """An incoming-webhook body: markdown ``text`` with the link, the facts as an attachment."""
    esc = _markdown_escape
    attachment = {
        "fallback": f"{message.title} {message.link}",
        "color": _COLORS.get(message.event, "#808080"),
        "title": "Open in jitportal",
        "title_link": message.link,
        "fields": [{"short": True, "title": label, "value": esc(value)} for label, value in message.facts],
    }
    if message.reason:
        attachment["text"] = f"**Reason:** {esc(message.reason)}"
    return {"text": f"**{esc(message.title)}**  [Open in jitportal]({message.link})", "attachments": [attachment]}


_COLORS = {
    Event.REQUEST_CREATED: "#1c7ed6",
    Event.REQUEST_APPROVED: "#2f9e44",
    Event.REQUEST_DENIED: "#e03131",
    Event.REQUEST_EXPIRED: "#868e96",
    Event.GRANT_EXPIRING: "#f08c00",
    Event.GRANT_ENDED: "#868e96",
}


def email_payload(message: Message, recipients: list[str]) -> dict:
    lines = [message.title, ""]
    lines += [f"{label}: {value}" for label, value in message.facts]
    if message.reason:
        lines += ["", "Reason:", message.reason]
    lines += ["", message.link, ""]
    return {"to": recipients, "subject": " ".join(message.title.split()), "body": "\n".join(lines)}


def webhook_body(payload: dict) -> bytes:
    """The exact bytes sent, and signed, for a JSON body."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(body: bytes, secret: str) -> str:
    """``X-Jitportal-Signature`` value: HMAC-SHA256 of the exact body bytes with the channel secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def mask_url(url: str) -> str:
    """Enough of a webhook URL to recognise it, never the token in its path."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "••••"
    if not parts.scheme or not parts.hostname:
        return "••••"
    return f"{parts.scheme}://{parts.hostname}{port}/…/••••"


# --- queueing, in the event's transaction --------------------------------------------------


def _channels_for(event: str) -> list[NotificationChannel]:
    # Channels are few: filtering the events list in Python works on every database.
    # Queueing never needs the URL or secret, so they are not even decrypted.
    enabled = NotificationChannel.objects.filter(enabled=True).defer("url", "secret")
    channels = [c for c in enabled if event in (c.events or [])]
    prefetch_related_objects(channels, "roles")
    return channels


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


def _subject_key(access_request: AccessRequest, grant: Grant | None) -> str:
    return f"grant:{grant.pk}" if grant is not None else f"request:{access_request.pk}"


def _wants(channel: NotificationChannel, access_request: AccessRequest, grant: Grant | None) -> bool:
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
    *, event: str, subjects: Iterable[tuple[AccessRequest, Grant | None]], now: datetime | None = None
) -> int:
    """Queue ``event`` for many subjects at once; returns how many messages it queued.

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
    rows: list[Notification] = []
    for access_request, grant in subjects:
        message = build_message(event=event, access_request=access_request, grant=grant, now=now)
        for channel in channels:
            if not _wants(channel, access_request, grant):
                continue
            payload = _render(channel, message, access_request)
            if payload is None:
                continue
            rows.append(
                Notification(
                    channel=channel,
                    event=event,
                    subject_key=_subject_key(access_request, grant),
                    payload=payload,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
    if not rows:
        return 0
    # The unique (channel, event, subject) constraint keeps a replayed event from queuing twice.
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
    pks = list(
        Notification.objects.filter(
            channel__in=channels,
            event=event,
            subject_key__in={row.subject_key for row in rows},
            status=Notification.Status.PENDING,
        ).values_list("pk", flat=True)
    )
    transaction.on_commit(partial(enqueue_deliveries, pks))
    return len(rows)


def enqueue_deliveries(pks: list[int], *, expires: float | None = None) -> int:
    """Hand rows to workers; a lost hand-off only delays a row until the retry sweep finds it."""
    # By name: the task module sits above this one (it calls the services that notify).
    deliver = current_app.signature(DELIVER_TASK)
    sent = 0
    for pk in pks:
        try:
            deliver.apply_async((pk,), expires=expires, retry=False)
        except Exception:  # noqa: BLE001 - the broker may be down; the row is safe in the database
            logger.warning(
                "could not queue delivery of notification %s (and %d more); the retry sweep will send them",
                pk,
                len(pks) - sent - 1,
                exc_info=True,
            )
            break
        sent += 1
    return sent


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


# --- delivery --------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A webhook that redirects is misconfigured; following it could carry the body elsewhere.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)
_TRANSIENT_HTTP = {408, 425, 429}


def _post(url: str, body: bytes, headers: dict[str, str]) -> None:
    # urllib rather than requests: one JSON POST with a timeout needs no new dependency.
    if urlsplit(url).scheme not in ("http", "https"):
        raise DeliveryError("the channel URL must start with http:// or https://", permanent=True)
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json; charset=utf-8")
    request.add_header("User-Agent", "jitportal-notifier")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with _opener.open(request, timeout=settings.JITPORTAL_NOTIFICATION_TIMEOUT_SECONDS) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        transient = exc.code >= 500 or exc.code in _TRANSIENT_HTTP
        message = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
        raise DeliveryError(message, permanent=not transient) from exc
    except urllib.error.URLError as exc:
        raise DeliveryError(f"cannot reach the receiver: {exc.reason}") from exc
    except (TimeoutError, OSError) as exc:
        raise DeliveryError(f"cannot reach the receiver: {exc}") from exc


def _send(notification: Notification) -> None:
    channel = notification.channel
    if not channel.enabled:
        raise DeliveryError("the channel is disabled", permanent=True)
    payload = notification.payload
    if channel.kind == Kind.EMAIL:
        if not payload.get("to"):
            raise DeliveryError("no recipients", permanent=True)
        try:
            EmailMessage(payload["subject"], payload["body"], to=payload["to"]).send()
        except OSError as exc:  # smtplib's errors are OSErrors too
            raise DeliveryError(f"cannot send mail: {exc}") from exc
        return
    if not channel.url:
        raise DeliveryError("the channel has no URL", permanent=True)
    body = webhook_body(payload)
    headers = {}
    if channel.kind == Kind.WEBHOOK:
        if not channel.secret:
            raise DeliveryError("the webhook channel has no signing secret", permanent=True)
        headers = {
            SIGNATURE_HEADER: sign(body, channel.secret),
            "X-Jitportal-Event": notification.event,
            # Lets a receiver drop a repeat after an ambiguous failure (at-least-once delivery).
            "X-Jitportal-Delivery": str(notification.pk),
        }
    _post(channel.url, body, headers)


def backoff(attempts: int) -> timedelta:
    """Exponential in the attempts so far, capped, with jitter so retries of one outage spread out."""
    base = settings.JITPORTAL_NOTIFICATION_BACKOFF_SECONDS
    ceiling = min(settings.JITPORTAL_NOTIFICATION_BACKOFF_MAX_SECONDS, base * 2 ** max(attempts - 1, 0))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def _claimable(now: datetime) -> Q:
    return Q(status=Notification.Status.PENDING, next_attempt_at__lte=now) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    )


def notification_deliver(*, notification_id: int, now: datetime | None = None) -> str | None:
    """Claim one due row, send it, record the outcome; returns the new status, or None if not ours.

    The claim is a conditional update that sets a lease: two workers handed
    the same row cannot both send it, and a worker that dies leaves a lease
    that runs out so another may try.
    """
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.JITPORTAL_NOTIFICATION_LEASE_SECONDS)
    if not Notification.objects.filter(_claimable(now), pk=notification_id).update(claimed_until=lease):
        return None
    notification = Notification.objects.select_related("channel").get(pk=notification_id)
    ours = Notification.objects.filter(pk=notification_id, claimed_until=lease)
    try:
        _send(notification)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the row
        error = exc if isinstance(exc, DeliveryError) else DeliveryError(f"{type(exc).__name__}: {exc}")
        attempts = notification.attempts + 1
        give_up = error.permanent or attempts >= settings.JITPORTAL_NOTIFICATION_MAX_ATTEMPTS
        text = str(error)
        if notification.channel.url:
            text = text.replace(notification.channel.url, mask_url(notification.channel.url))
        status = Notification.Status.FAILED if give_up else Notification.Status.PENDING
        ours.update(
            status=status,
            attempts=F("attempts") + 1,
            last_error=text[:2000],
            next_attempt_at=now if give_up else now + backoff(attempts),
            claimed_until=None,
        )
        logger.warning("notification %s attempt %d: %s (%s)", notification_id, attempts, text, status)
        return status
    if not ours.update(
        status=Notification.Status.DELIVERED,
        attempts=F("attempts") + 1,
        delivered_at=now,
        last_error="",
        claimed_until=None,
    ):
        logger.warning("notification %s was delivered after its lease ran out", notification_id)
    return Notification.Status.DELIVERED


def notifications_due(*, now: datetime | None = None, limit: int | None = None) -> list[int]:
    """Pending rows whose attempt is due and whose lease (if any) ran out, oldest first.

    These include rows whose hand-off to a worker was lost and rows whose
    worker died mid-delivery.
    """
    now = now or timezone.now()
    limit = limit or settings.JITPORTAL_SWEEP_BATCH_SIZE
    return list(
        Notification.objects.filter(_claimable(now)).order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
    )
