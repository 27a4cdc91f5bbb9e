"""Probes and metrics for operators: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` says the process answers (nothing else: a database outage must
not make an orchestrator restart every web process). ``/readyz`` says this
deployment can do its work: the database answers, the broker answers within
a short timeout, and no sweep is more than two intervals behind. Either
answers JSON; ``/readyz`` is a 503 naming the failing parts. ``/metrics``
serves Prometheus text to a token holding capability ``audit`` or to a client
on this machine (``jitportal.net.client_address``, so behind a local proxy
set ``JITPORTAL_TRUSTED_PROXIES``).
"""

from __future__ import annotations

import ipaddress
import logging

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rest_framework.exceptions import NotAuthenticated, PermissionDenied
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from accounts.capabilities import Capability, may_audit, refusal
from jitportal import celery_app
from jitportal.metrics import metrics_exposition
from jitportal.net import client_address
from requests_app.models import AccessRequest, Grant, IssuedCertificate, Notification, SweepRun
from requests_app.sweeps import sweep_lag_bound, sweep_lags

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure means not ready; its text may carry a DSN, so only the type is shown
        logger.warning("readiness: database check failed", exc_info=True)
        return f"unreachable ({type(exc).__name__})"
    return None


def _broker() -> str | None:
    # The broker settings bound connecting and each answer to well under a second.
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=1)
            conn.default_channel  # noqa: B018 - opening the channel makes Redis and AMQP answer
    except Exception as exc:  # same as above: the URL may hold a password
        logger.warning("readiness: broker check failed", exc_info=True)
        return f"unreachable ({type(exc).__name__})"
    return None


def _sweeps() -> str | None:
    bound = sweep_lag_bound().total_seconds()
    behind = {name: lag for name, lag in sweep_lags().items() if lag > bound}
    if not behind:
        return None
    listed = ", ".join(f"{name} {lag:.0f}s" for name, lag in sorted(behind.items()))
    return f"behind by more than {bound:.0f}s: {listed}"


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    database = _database()
    problems = {"database": database, "broker": _broker()}
    # Lag is read from the database; without one it is unknown, not failing.
    if database is None:
        problems["sweeps"] = _sweeps()
    failing = sorted(name for name, problem in problems.items() if problem is not None)
    checks = {name: problem or "ok" for name, problem in problems.items()}
    checks.setdefault("sweeps", "not checked: no database")
    body: dict[str, object] = {"status": "unavailable" if failing else "ok", "checks": checks}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)


class _StateCollector(Collector):
    """Figures read from the database at scrape time: a constant handful of queries."""

    def collect(self):
        now = timezone.now()
        yield GaugeMetricFamily(
            "jitportal_pending_requests",
            "Access requests waiting for review.",
            value=AccessRequest.objects.in_state(AccessRequest.State.PENDING, at=now).count(),
        )
        yield GaugeMetricFamily(
            "jitportal_live_grants", "Grants active now.", value=Grant.objects.active(at=now).count()
        )
        outbox = GaugeMetricFamily(
            "jitportal_outbox_messages", "Notifications in the outbox, by status.", labels=["status"]
        )
        counts = dict(
            Notification.objects.filter(status__in=[Notification.Status.PENDING, Notification.Status.FAILED])
            .order_by()
            .values_list("status")
            .annotate(n=Count("pk"))
        )
        for status in (Notification.Status.PENDING, Notification.Status.FAILED):
            outbox.add_metric([status], counts.get(status, 0))
        yield outbox
        yield GaugeMetricFamily(
            "jitportal_certificates_issued", "Certificates issued, all time.", value=IssuedCertificate.objects.count()
        )
        lag = GaugeMetricFamily(
            "jitportal_sweep_lag_seconds", "How long each sweep's oldest due row has waited now.", labels=["sweep"]
        )
        for name, seconds in sorted(sweep_lags(now=now).items()):
            lag.add_metric([name], seconds)
        yield lag
        last = GaugeMetricFamily(
            "jitportal_sweep_last_run_lag_seconds",
            "How late the oldest row was in each sweep's last run.",
            labels=["sweep"],
        )
        finished = GaugeMetricFamily(
            "jitportal_sweep_last_finished_timestamp_seconds", "When each sweep last finished a run.", labels=["sweep"]
        )
        for run in SweepRun.objects.all():
            last.add_metric([run.name], run.lag_seconds)
            if run.finished_at is not None:
                finished.add_metric([run.name], run.finished_at.timestamp())
        yield last
        yield finished
        yield GaugeMetricFamily(
            "jitportal_sweep_interval_seconds",
            "How often beat runs each sweep.",
            value=settings.JITPORTAL_SWEEP_INTERVAL_SECONDS,
        )


def _is_local(request: HttpRequest) -> bool:
    address = client_address(request)
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class _Whatever(BaseContentNegotiation):
    # Scrapers ask for text/plain or OpenMetrics; the answer is Prometheus text whatever they ask.
    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class MetricsView(APIView):
    """Prometheus text for auditors' tokens and for clients on this machine."""

    permission_classes: list = []
    content_negotiation_class = _Whatever

    # Not part of the API contract: a scrape target, documented in the README.
    @extend_schema(exclude=True)
    def get(self, request) -> HttpResponse:
        if not _is_local(request):
            if not request.user.is_authenticated:
                raise NotAuthenticated
            if not may_audit(request.user):
                raise PermissionDenied(refusal(Capability.AUDIT))
        return metrics_exposition([_StateCollector()])


metrics = MetricsView.as_view()
