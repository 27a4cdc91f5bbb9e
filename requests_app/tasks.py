"""Celery tasks: a few lines around a service each.

The sweeps run from beat (``CELERY_BEAT_SCHEDULE`` in settings) and are safe
to run twice at once: the services claim rows with conditional updates. None
of them retries itself; the next run of the sweep is the retry.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from requests_app.notifications.delivery import notification_deliver, notifications_due
from requests_app.notifications.outbox import enqueue_deliveries
from requests_app.services import grants_end_expired, grants_remind_expiring, request_expire_pending


@shared_task
def expire_grants() -> int:
    return grants_end_expired()


@shared_task
def expire_pending_requests() -> int:
    return request_expire_pending()


@shared_task
def remind_expiring_grants() -> int:
    return grants_remind_expiring()


@shared_task
def deliver_notification(notification_id: int) -> str | None:
    # A row that is gone, delivered or claimed by another worker is skipped by the claim.
    return notification_deliver(notification_id=notification_id)


@shared_task
def retry_notifications() -> int:
    """Hand out due rows again: retries, and rows whose hand-off or worker was lost."""
    # A hand-off not picked up before the next sweep is replaced by that sweep's.
    return enqueue_deliveries(notifications_due(), expires=settings.JITPORTAL_SWEEP_INTERVAL_SECONDS)
