"""Running the background sweeps and recording how late each one is.

Each sweep knows when its oldest due row became due; a run records how late
that row was when the run started (it is handled first: sweeps work oldest
first) in ``SweepRun``. ``sweep_lags`` reads the same clock live, so a sweep
that stopped running shows a growing lag even though it records nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Min, Q, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from requests_app.models import AccessRequest, Grant, SweepRun
from requests_app.notifications.delivery import notifications_oldest_due


def _grants_oldest_end(now: datetime) -> datetime | None:
    due = Grant.objects.due_to_end(at=now).aggregate(
        expired=Min("expires_at", filter=Q(expires_at__lte=now)), revoked=Min("revoked_at")
    )
    times = [t for t in due.values() if t is not None]
    return min(times) if times else None


def _requests_oldest_expiry(now: datetime) -> datetime | None:
    return AccessRequest.objects.due_for_expiry(at=now).aggregate(oldest=Min("pending_expires_at"))["oldest"]


def _grants_oldest_reminder(now: datetime) -> datetime | None:
    before = settings.JITPORTAL_REMINDER_BEFORE
    oldest = Grant.objects.due_for_reminder(at=now, before=before).aggregate(oldest=Min("expires_at"))["oldest"]
    return oldest - before if oldest is not None else None


def _post_reviews_oldest(now: datetime) -> datetime | None:
    every = settings.JITPORTAL_POST_REVIEW_REANNOUNCE
    oldest = AccessRequest.objects.filter(
        post_review=AccessRequest.PostReview.PENDING, post_review_announced_at__lt=now - every
    ).aggregate(oldest=Min("post_review_announced_at"))["oldest"]
    return oldest + every if oldest is not None else None


def _notifications_oldest(now: datetime) -> datetime | None:
    return notifications_oldest_due(now=now)


@dataclass(frozen=True)
class Sweep:
    name: str
    oldest_due: Callable[[datetime], datetime | None]


# Named as the beat entries are (settings.CELERY_BEAT_SCHEDULE).
SWEEPS = {
    s.name: s
    for s in (
        Sweep("expire-grants", _grants_oldest_end),
        Sweep("expire-pending-requests", _requests_oldest_expiry),
        Sweep("remind-expiring-grants", _grants_oldest_reminder),
        Sweep("announce-post-reviews", _post_reviews_oldest),
        Sweep("retry-notifications", _notifications_oldest),
    )
}


def _lag(now: datetime, due: datetime | None) -> float:
    return max((now - due).total_seconds(), 0.0) if due is not None else 0.0


def sweep_run(*, name: str, run: Callable[[datetime], int]) -> int:
    """Run sweep ``name`` (``run(now)`` returns rows handled) and record the run; returns the rows.

    One write per run (sweeps run every few seconds beside the deliveries'
    writes): a run that dies records nothing, and its lag still shows live
    in ``sweep_lags``.
    """
    started = timezone.now()
    lag = _lag(started, SWEEPS[name].oldest_due(started))
    rows = run(started)
    record = {"started_at": started, "finished_at": timezone.now(), "rows": rows, "lag_seconds": lag}
    updated = SweepRun.objects.filter(name=name).update(
        **record, max_lag_seconds=Greatest(F("max_lag_seconds"), Value(lag)), runs=F("runs") + 1
    )
    if not updated:
        # The first run of this sweep; a concurrent first run may have made the row meanwhile.
        _, created = SweepRun.objects.get_or_create(name=name, defaults={**record, "max_lag_seconds": lag, "runs": 1})
        if not created:
            SweepRun.objects.filter(name=name).update(
                **record, max_lag_seconds=Greatest(F("max_lag_seconds"), Value(lag)), runs=F("runs") + 1
            )
    return rows


def sweep_lags(*, now: datetime | None = None) -> dict[str, float]:
    """Each sweep's lag now: how long its oldest due row has waited (0 when nothing waits)."""
    now = now or timezone.now()
    return {name: _lag(now, sweep.oldest_due(now)) for name, sweep in SWEEPS.items()}


def sweep_lag_bound() -> timedelta:
    """Beyond two intervals a sweep is late: one run may just have missed the row, a second must not."""
    return timedelta(seconds=2 * settings.JITPORTAL_SWEEP_INTERVAL_SECONDS)
