"""Delivery of queued notifications.

Delivery claims a row with a conditional update that sets a lease, sends with
a timeout, and records the outcome. A failure is retried with exponential
backoff and jitter until ``JITPORTAL_NOTIFICATION_MAX_ATTEMPTS``; a worker
that dies mid-delivery leaves a lease that runs out, and the retry sweep
hands the row out again."""

from __future__ import annotations

import logging
import random
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from email.utils import parseaddr
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMessage
from django.db.models import F, Min, Q
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from requests_app.models import Notification
from requests_app.notifications.formats import SIGNATURE_HEADER, mask_url, sign, webhook_body
from requests_app.notifications.messages import Kind

logger = logging.getLogger(__name__)

# The idempotency key of a delivery: the outbox row's id, the same on every attempt (README, Notifications).
DELIVERY_HEADER = "X-Jitportal-Delivery"


def message_id(notification: Notification) -> str:
    """The Message-ID of an email delivery: the same on every attempt, in the sender's domain."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
    return f"<jitportal-notification-{notification.pk}@{domain}>"


class DeliveryError(Exception):
    """A delivery attempt failed; ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


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
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - the scheme is checked above
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
        # The same Message-ID on every attempt lets mail systems and readers drop a repeat.
        headers = {"Message-ID": message_id(notification)}
        try:
            EmailMessage(payload["subject"], payload["body"], to=payload["to"], headers=headers).send()
        except OSError as exc:  # smtplib's errors are OSErrors too
            raise DeliveryError(f"cannot send mail: {exc}") from exc
        return
    if not channel.url:
        raise DeliveryError("the channel has no URL", permanent=True)
    body = webhook_body(payload)
    # Every attempt at one message carries the same key, so a receiver (or a
    # proxy in front of Slack or Mattermost) can drop a repeat after an
    # ambiguous failure: delivery is at least once.
    headers = {DELIVERY_HEADER: str(notification.pk)}
    if channel.kind == Kind.WEBHOOK:
        if not channel.secret:
            raise DeliveryError("the webhook channel has no signing secret", permanent=True)
        headers |= {SIGNATURE_HEADER: sign(body, channel.secret), "X-Jitportal-Event": notification.event}
    _post(channel.url, body, headers)


def backoff(attempts: int) -> timedelta:
    """Exponential in the attempts so far, capped, with jitter so retries of one outage spread out."""
    base = settings.JITPORTAL_NOTIFICATION_BACKOFF_SECONDS
    ceiling = min(settings.JITPORTAL_NOTIFICATION_BACKOFF_MAX_SECONDS, base * 2 ** max(attempts - 1, 0))
    # Jitter spreads retries out; it guards nothing, so no secure source is needed.
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311


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
    except Exception as exc:  # every failure is recorded on the row
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


def notifications_deliver(*, notification_ids: list[int]) -> list[int]:
    """Deliver rows in turn (each as ``notification_deliver``); returns those left for another hand-off.

    A slow or hung receiver must not hold the rest of the list: once half a
    lease has gone by, the remaining rows are returned untouched, for the
    caller to hand off again, so none waits in one task until the retry sweep
    would count it lost.
    """
    started = time.monotonic()
    budget = settings.JITPORTAL_NOTIFICATION_LEASE_SECONDS / 2
    for index, notification_id in enumerate(notification_ids):
        if index and time.monotonic() - started >= budget:
            return list(notification_ids[index:])
        notification_deliver(notification_id=notification_id)
    return []


def _hand_off_lost(now: datetime) -> Q:
    # A hand-off younger than the lease may still be waiting in the queue behind
    # others; sending it again would only add a task the claim then throws away.
    grace = now - timedelta(seconds=settings.JITPORTAL_NOTIFICATION_LEASE_SECONDS)
    return Q(handed_off_at__isnull=True) | Q(handed_off_at__lte=grace)


def notifications_due(*, now: datetime | None = None, limit: int | None = None) -> list[int]:
    """Pending rows whose attempt is due, whose lease (if any) ran out and whose hand-off was lost, oldest first.

    These are rows never handed to a worker (the broker was down), rows whose
    task was lost or expired in the queue, rows whose worker died mid-delivery
    and failed attempts whose backoff has passed; not rows handed off within
    the lease, which are still on their way.
    """
    now = now or timezone.now()
    limit = limit or settings.JITPORTAL_SWEEP_BATCH_SIZE
    return list(
        Notification.objects.filter(_claimable(now), _hand_off_lost(now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def notifications_oldest_due(*, now: datetime) -> datetime | None:
    """When the longest-waiting row of ``notifications_due`` became the retry sweep's to send."""
    lease = timedelta(seconds=settings.JITPORTAL_NOTIFICATION_LEASE_SECONDS)
    rows = Notification.objects.filter(_claimable(now), _hand_off_lost(now))
    # Due from the later of its attempt time and the end of its hand-off's grace.
    return rows.aggregate(
        oldest=Min(Greatest("next_attempt_at", Coalesce(F("handed_off_at") + lease, "next_attempt_at")))
    )["oldest"]
