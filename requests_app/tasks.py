"""Celery tasks: a few lines around a service each.

The sweeps run from beat (``CELERY_BEAT_SCHEDULE`` in settings) on a queue of
their own (``CELERY_TASK_ROUTES``), so deliveries never delay them, and are
safe to run twice at once: the services claim rows with conditional updates.
Each run is recorded with its lag (``requests_app.sweeps``). None of them
retries itself; the next run of the sweep is the retry.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from requests_app.notifications.delivery import notification_deliver, notifications_deliver, notifications_due
from requests_app.notifications.outbox import enqueue_deliveries
from requests_app.services import (
    grants_end_expired,
    grants_remind_expiring,
    request_expire_pending,
    requests_announce_post_review,
)
from requests_app.sweeps import sweep_run


@shared_task
def expire_grants() -> int:
    return sweep_run(name="expire-grants", run=lambda now: grants_end_expired(now=now))


@shared_task
def expire_pending_requests() -> int:
    return sweep_run(name="expire-pending-requests", run=lambda now: request_expire_pending(now=now))


@shared_task
def remind_expiring_grants() -> int:
    return sweep_run(name="remind-expiring-grants", run=lambda now: grants_remind_expiring(now=now))


@shared_task
def announce_post_reviews() -> int:
    return sweep_run(name="announce-post-reviews", run=lambda now: requests_announce_post_review(now=now))


@shared_task
def deliver_notification(notification_id: int) -> str | None:
    # Hand-offs now carry lists (deliver_notifications); this one still runs tasks already queued with one id.
    # A row that is gone, delivered or claimed by another worker is skipped by the claim.
    return notification_deliver(notification_id=notification_id)


@shared_task
def deliver_notifications(notification_ids: list[int]) -> int:
    # The rows a slow receiver kept this task from reaching go back to the queue as a new task.
    rest = notifications_deliver(notification_ids=notification_ids)
    if rest:
        enqueue_deliveries(rest)
    return len(notification_ids) - len(rest)


def _retry_lost(now) -> int:
    # The sweep hands a row out again only once its hand-off is a lease old, so a
    # task may wait in the queue that long; after that a later sweep's replaces it.
    return enqueue_deliveries(notifications_due(now=now), expires=settings.JITPORTAL_NOTIFICATION_LEASE_SECONDS)


@shared_task
def retry_notifications() -> int:
    """Hand out lost rows again: retries whose backoff passed, and rows whose hand-off or worker was lost."""
    return sweep_run(name="retry-notifications", run=_retry_lost)
