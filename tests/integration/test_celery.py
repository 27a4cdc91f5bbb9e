"""End to end with a real Celery worker and beat on Redis: nothing here calls a task.

Each test starts its own worker (and beat where the schedule matters) as
subprocesses against a fresh database (see conftest.py), with the sweeps
every second and retries backing off from one second.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime

import pytest

from tests.integration.conftest import free_port
from tests.integration.receiver import Receiver

pytestmark = pytest.mark.redis

SECRET = "integration-signing-secret"


def test_beat_ends_an_approved_three_second_grant_on_its_own(portal):
    portal.worker()
    portal.beat()
    made = portal.driver.call("approved_grant", seconds=3)
    assert portal.driver.call("grant", pk=made["grant"])["state"] == "active"

    grant = portal.wait_until(
        lambda: (g := portal.driver.call("grant", pk=made["grant"]))["ended_at"] and g,
        timeout=20,
        what="beat's sweep to mark the grant ended",
    )

    assert grant["state"] == "expired"
    assert datetime.fromisoformat(grant["ended_at"]) >= datetime.fromisoformat(made["expires_at"])
    assert grant["ended_events"] == 1


def test_the_receiver_gets_the_slack_message_and_the_signed_webhook(portal, receiver):
    portal.driver.call(
        "channel", name="slack", kind="slack", events=["request.created"], url=receiver.url("/services/T/B/tok")
    )
    portal.driver.call(
        "channel", name="hook", kind="webhook", events=["request.created"], url=receiver.url("/hook"), secret=SECRET
    )
    portal.worker()

    request_id = portal.driver.call("create_request", reason="INC-4211 disk full", duration="30m")

    link = f"http://portal.test/admin/requests_app/accessrequest/{request_id}/change/"
    (slack,) = receiver.wait_for("/services/T/B/tok")
    body = json.loads(slack.body)
    assert body["text"] == f"alice requests prod-ops (role-based) for 30m <{link}|Open in jitportal>"
    assert body["blocks"][-1]["elements"][0]["url"] == link
    assert any("INC-4211 disk full" in json.dumps(block) for block in body["blocks"])

    (hook,) = receiver.wait_for("/hook")
    signature = "sha256=" + hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["X-Jitportal-Signature"], signature)
    assert json.loads(hook.body)["request"]["id"] == request_id

    # Delivered once each, and recorded so.
    time.sleep(1.5)
    assert len(receiver.received) == 2
    assert {(n["channel__name"], n["status"], n["attempts"]) for n in portal.driver.call("notifications")} == {
        ("slack", "delivered", 1),
        ("hook", "delivered", 1),
    }


def test_a_message_for_a_receiver_that_is_down_arrives_once_it_is_back(portal):
    port = free_port()
    portal.driver.call(
        "channel", name="slack", kind="slack", events=["request.created"], url=f"http://127.0.0.1:{port}/x"
    )
    portal.worker()
    portal.beat()

    portal.driver.call("create_request")

    def retried():
        (row,) = portal.driver.call("notifications")
        return row["attempts"] >= 2 and row

    row = portal.wait_until(retried, timeout=20, what="the delivery to fail and be retried")
    assert row["status"] == "pending"
    assert "cannot reach the receiver" in row["last_error"]

    back = Receiver(port=port)
    try:
        back.wait_for("/x", timeout=20)
        (row,) = portal.wait_until(
            lambda: [n for n in portal.driver.call("notifications") if n["status"] == "delivered"],
            timeout=10,
            what="the row to be marked delivered",
        )
        time.sleep(2)
        assert len(back.on("/x")) == 1
    finally:
        back.stop()
    assert row["last_error"] == ""


def test_a_worker_killed_mid_sweep_leaves_nothing_half_done_or_done_twice(portal):
    grants = 1000
    assert portal.driver.call("expired_grants", n=grants) == grants
    portal.driver.call("channel", name="mail", kind="email", events=["grant.ended"])
    # Small batches make the sweep long enough to kill it in the middle.
    first = portal.worker("worker-1", JITPORTAL_SWEEP_BATCH_SIZE="5")
    portal.beat()

    portal.wait_until(
        lambda: portal.driver.call("ended_count") > 0, timeout=20, interval=0.01, what="the sweep to start"
    )
    first.kill()

    state = portal.driver.call("sweep_state")
    assert 0 < state["ended"] < grants, f"the kill came after the sweep finished: {state}"
    assert state["half_done"] == [] and state["twice"] == [], state
    assert state["chain_ok"]

    portal.worker("worker-2", JITPORTAL_SWEEP_BATCH_SIZE="500")

    def finished():
        s = portal.driver.call("sweep_state")
        return s["ended"] == grants and s["delivered"] == grants and s

    # Re-sent tasks expire after one lease (3 s here) and the killed worker's rows wait that lease first, so on
    # a loaded machine the backlog of 1,000 drains in rounds: the bound is generous, the assertions below strict.
    state = portal.wait_until(
        finished, timeout=120, interval=0.5, what="a new worker to finish the sweep and deliveries"
    )
    assert state["half_done"] == [] and state["twice"] == [], state
    assert state["chain_ok"]
