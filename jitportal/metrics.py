"""Request counters for Prometheus, correct across gunicorn's worker processes.

Counters and the latency histogram live in ``prometheus_client``; with
``PROMETHEUS_MULTIPROC_DIR`` set (production: one empty folder shared by the
web workers, emptied at each start) every process writes its values there
and a scrape adds them up, whichever worker answers it. Without it (one
process: ``runserver``, tests) the process's own registry is read. Figures
that are state rather than events (pending requests, live grants, backlog)
are read from the database at scrape time by the app that owns them, so they
need no shared memory at all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

REQUESTS = Counter(
    "jitportal_http_requests_total", "HTTP requests answered, by view and status class.", ["view", "method", "status"]
)
LATENCY = Histogram(
    "jitportal_http_request_duration_seconds",
    "Time to answer an HTTP request, by view.",
    ["view"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _view_name(request: HttpRequest) -> str:
    # The route's name, never the raw path: paths carry ids and would make a series per object.
    match = getattr(request, "resolver_match", None)
    return match.view_name if match is not None else "unmatched"


class RequestMetricsMiddleware:
    """Counts each answer and its latency under the name of the view that gave it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        view = _view_name(request)
        LATENCY.labels(view).observe(time.perf_counter() - started)
        REQUESTS.labels(view, request.method, f"{response.status_code // 100}xx").inc()
        return response


def metrics_exposition(collectors: Iterable[Collector] = ()) -> HttpResponse:
    """The text exposition of the request metrics plus ``collectors`` (read at scrape time)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    for collector in collectors:
        registry.register(collector)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _Forward(Collector):
    # The process registry, read through so per-scrape collectors never join it for good.
    def __init__(self, source: CollectorRegistry):
        self.source = source

    def collect(self):
        return self.source.collect()
