"""Background work under faults, with real processes: a hung receiver, a hung or absent broker.

Sweeps run on a queue of their own, so a backlog of deliveries to a receiver
that never answers does not delay them; a web request never waits on a
broker for more than its short timeout, and the outbox row waits for the
retry sweep instead.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from tests.integration.conftest import REDIS_URL, free_port

pytestmark = pytest.mark.redis


class SilentServer:
    """Accepts every TCP connection and never answers: a hung webhook or a hung broker."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def stop(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.stop()


def test_sweeps_end_grants_on_time_behind_a_backlog_for_a_receiver_that_hangs(portal, silent):
    # Every ended grant is announced to a webhook that never answers: each delivery holds a worker for its timeout.
    portal.driver.call(
        "channel",
        name="hangs",
        kind="webhook",
        events=["grant.ended"],
        url=f"http://127.0.0.1:{silent.port}/",
        secret="k",
    )
    assert portal.driver.call("expired_grants", n=60) == 60
    portal.worker("deliveries", queues=("deliveries",))
    portal.worker("sweeps", queues=("sweeps",))
    portal.beat()
    portal.wait_until(lambda: portal.driver.call("ended_count") == 60, timeout=20, what="the first 60 grants to end")
    portal.wait_until(lambda: silent.accepted, timeout=10, what="the deliveries to reach the hanging receiver")

    # 60 deliveries of 1 s each on two processes: about 30 s of backlog from here on.
    made = [portal.driver.call("approved_grant", seconds=2) for _ in range(3)]
    ended = [
        portal.wait_until(
            lambda m=m: (g := portal.driver.call("grant", pk=m["grant"]))["ended_at"] and g,
            timeout=15,
            what="a grant ending behind the delivery backlog",
        )
        for m in made
    ]

    interval = 1
    for m, grant in zip(made, ended, strict=True):
        lag = (datetime.fromisoformat(grant["ended_at"]) - datetime.fromisoformat(m["expires_at"])).total_seconds()
        # Under two sweep intervals, with a second of slack for a machine shared with other runs.
        assert 0 <= lag < 2 * interval + 1, lag
    pending = [n for n in portal.driver.call("notifications") if n["status"] == "pending"]
    assert len(pending) > 20, "the backlog was still there while the sweeps kept time"
    runs = portal.driver.call("sweep_runs")
    assert runs["expire-grants"]["runs"] >= 3


def _create_at_once(base_url: str, token: str, n: int) -> list[tuple[float, int]]:
    def create(i: int) -> tuple[float, int]:
        body = json.dumps({"roles": ["prod-ops"], "reason": f"INC-{i}", "duration": "30m"}).encode()
        request = urllib.request.Request(
            f"{base_url}/api/v1/requests/",
            data=body,
            method="POST",
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=30) as response:
            status = response.status
        return time.monotonic() - started, status

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(create, range(n)))


@pytest.mark.parametrize("broker", ["hangs", "refuses"])
def test_a_hung_or_absent_broker_delays_notifications_never_answers(portal, silent, receiver, broker):
    portal.driver.call(
        "channel", name="hook", kind="webhook", events=["request.created"], url=receiver.url("/hook"), secret="k"
    )
    token = portal.driver.call("token")
    dead = f"redis://127.0.0.1:{silent.port if broker == 'hangs' else free_port()}/3"
    port = free_port()
    portal.web(port, CELERY_BROKER_URL=dead)
    base = f"http://127.0.0.1:{port}"
    _create_at_once(base, token, 1)  # the first request loads the code; not what is measured

    answers = _create_at_once(base, token, 10)

    assert [status for _, status in answers] == [201] * 10
    slowest = max(seconds for seconds, _ in answers)
    # One bounded wait on the broker (0.5 s) plus normal time, on a machine shared with other runs.
    assert slowest < 2.5, answers
    created = portal.driver.call("requests")
    assert len(created) == 11, "each request created exactly once"
    rows = portal.driver.call("notifications")
    assert len(rows) == 11 and {r["status"] for r in rows} == {"pending"}

    # A real broker again: the retry sweep finds the rows never handed off and a worker delivers them.
    portal.worker()
    portal.beat()
    portal.wait_until(lambda: len(receiver.on("/hook")) >= 11, timeout=30, what="the held-back notifications")
    time.sleep(1.5)
    assert sorted(json.loads(r.body)["request"]["id"] for r in receiver.on("/hook")) == sorted(created)
    assert {n["status"] for n in portal.driver.call("notifications")} == {"delivered"}
    assert REDIS_URL not in dead


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_probes_of_a_real_deployment_and_of_one_whose_database_is_down(portal):
    port = free_port()
    portal.web(port)
    status, body = _get(f"http://127.0.0.1:{port}/readyz")
    assert (status, body["checks"]) == (200, {"database": "ok", "broker": "ok", "sweeps": "ok"})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert b"\njitportal_pending_requests 0.0\n" in response.read()

    down = free_port()
    portal.web(down, DATABASE_URL=f"postgres://jit:hunter2@127.0.0.1:{free_port()}/gone")
    assert _get(f"http://127.0.0.1:{down}/healthz") == (200, {"status": "ok"})
    status, body = _get(f"http://127.0.0.1:{down}/readyz")
    assert status == 503
    assert body["failing"] == ["database"]
    assert body["checks"]["database"].startswith("unreachable (")
    assert body["checks"]["sweeps"] == "not checked: no database"
    assert "hunter2" not in json.dumps(body)
