"""/healthz, /readyz and /metrics: what each answers, and to whom."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import token_create
from jitportal import celery_app
from requests_app.models import SweepRun
from requests_app.services import grants_end_expired
from tests.conftest import make_role
from tests.requests_app.test_tasks import expired_grants

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker_at(monkeypatch):
    """Points the Celery app at ``url`` with the timeouts production uses for Redis, for one test."""
    saved = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options)

    def point(url: str) -> None:
        # Celery reads CELERY_BROKER_URL from the environment before its own settings.
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        celery_app.conf.broker_url = url
        celery_app.conf.broker_transport_options = {
            "socket_timeout": 0.5,
            "socket_connect_timeout": 0.5,
            "max_retries": 0,
        }

    yield point
    celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved


@pytest.fixture
def silent_server():
    """A TCP server that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthz_answers_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_when_database_broker_and_sweeps_are(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "sweeps": "ok"}}


@pytest.mark.parametrize("broker", ["closed", "silent"])
def test_readyz_names_the_broker_when_it_refuses_or_never_answers(client, broker_at, silent_server, broker):
    port = closed_port() if broker == "closed" else silent_server
    broker_at(f"redis://127.0.0.1:{port}/3")
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 2
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"].startswith("unreachable")
    assert body["checks"]["database"] == body["checks"]["sweeps"] == "ok"


def test_readyz_names_a_sweep_more_than_two_intervals_behind(client, requester, reviewer, settings):
    settings.JITPORTAL_SWEEP_INTERVAL_SECONDS = 30
    role = make_role("prod-ops", approvals=1, max_duration=timedelta(hours=8))
    expired_grants(1, requester=requester, reviewer=reviewer, role=role)

    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["sweeps"]
    assert body["checks"]["sweeps"].startswith("behind by more than 60s: expire-grants ")

    grants_end_expired()
    assert client.get("/readyz").status_code == 200


# --- metrics -----------------------------------------------------------------------------------


def remote(token: str | None = None) -> APIClient:
    client = APIClient(REMOTE_ADDR="203.0.113.9")
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_metrics_from_localhost_need_no_token(client):
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert response["Content-Type"].startswith("text/plain")
    assert 'jitportal_http_requests_total{method="GET",status="2xx",view="healthz"}' in text
    assert 'jitportal_http_request_duration_seconds_count{view="healthz"}' in text
    for name in (
        "jitportal_pending_requests",
        "jitportal_live_grants",
        'jitportal_outbox_messages{status="pending"}',
        'jitportal_outbox_messages{status="failed"}',
        "jitportal_certificates_issued",
        'jitportal_sweep_lag_seconds{sweep="expire-grants"}',
        "jitportal_sweep_interval_seconds",
    ):
        assert f"\n{name} " in text, name


@pytest.mark.parametrize("accept", ["text/plain", "application/openmetrics-text; version=1.0.0", "application/json"])
def test_metrics_answer_prometheus_text_whatever_the_scraper_accepts(client, accept):
    response = client.get("/metrics", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"\njitportal_live_grants " in response.content


def test_metrics_from_elsewhere_need_a_token(client):
    assert remote().get("/metrics").status_code == 401


def test_metrics_refuse_a_token_without_audit(requester):
    _, token = token_create(user=requester, by=requester)
    response = remote(token).get("/metrics")
    assert response.status_code == 403
    assert "audit" in response.json()["detail"]


def test_metrics_serve_an_auditor_token_the_figures_read_from_the_database(auditor, requester, reviewer):
    role = make_role("prod-ops", approvals=1, max_duration=timedelta(hours=8))
    expired_grants(2, requester=requester, reviewer=reviewer, role=role)
    SweepRun.objects.create(
        name="expire-grants", started_at=timezone.now(), finished_at=timezone.now(), lag_seconds=4.5
    )
    _, token = token_create(user=auditor, by=auditor)

    response = remote(token).get("/metrics")

    assert response.status_code == 200
    text = response.content.decode()
    assert "\njitportal_live_grants 0.0\n" in text
    assert 'jitportal_sweep_last_run_lag_seconds{sweep="expire-grants"} 4.5' in text
    lag_line = next(
        line for line in text.splitlines() if line.startswith('jitportal_sweep_lag_seconds{sweep="expire-grants"}')
    )
    assert float(lag_line.split()[-1]) > 3000  # the grants ended an hour ago and no sweep has recorded it


def test_metrics_queries_do_not_grow_with_rows(client, requester, reviewer, django_assert_max_num_queries):
    role = make_role("prod-ops", approvals=1, max_duration=timedelta(hours=8))
    expired_grants(50, requester=requester, reviewer=reviewer, role=role)
    with django_assert_max_num_queries(12):
        assert client.get("/metrics").status_code == 200
