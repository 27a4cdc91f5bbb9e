"""The audit log over the API: auditors only, newest first, filterable, read-only."""

from __future__ import annotations

from itertools import pairwise

import pytest

from audit.models import AuditEvent
from audit.services import audit_checkpoint, audit_seal
from requests_app import services
from requests_app.models import AccessRequest
from tests.conftest import give_capabilities, make_user

AUDIT = "/api/v1/audit/"


@pytest.fixture
def approved(requester, reviewer, reviewer2, prod_ssh, web1) -> AccessRequest:
    made = services.request_create(requester=requester, resources=[web1], reason="INC-1")
    services.request_review(request=made, reviewer=reviewer, decision="approve", reason="ok")
    services.request_review(request=made, reviewer=reviewer2, decision="approve", reason="ok")
    return made


def events(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()["results"]


@pytest.mark.parametrize("who", ["alice", "bob", "mallory", "stella"])
def test_only_holders_of_audit_read_the_audit_log(api, approved, outsider, staff, who):
    user = type(outsider).objects.get(username=who)

    response = api(user).get(AUDIT)

    assert response.status_code == 403
    assert response.json()["detail"] == "You need the audit capability."
    assert api(user).get(f"{AUDIT}{AuditEvent.objects.first().pk}/").status_code == 403


def test_superuser_reads_the_audit_log(api, approved):
    root = type(approved.requester).objects.create_superuser("root", "root@example.com", "pw")

    assert len(events(api(root).get(AUDIT))) == AuditEvent.objects.count()


def test_deactivated_auditor_is_refused(api, auditor, approved):
    auditor.is_active = False
    auditor.save(update_fields=["is_active"])

    assert api(auditor).get(AUDIT).status_code == 403


def test_create_review_and_approve_are_recorded_newest_first(api, auditor, approved):
    results = events(api(auditor).get(AUDIT))

    assert [e["id"] for e in results] == sorted((e["id"] for e in results), reverse=True)
    trail = [(e["action"], e["actor"]) for e in reversed(results) if e["target_id"] == str(approved.pk)]
    assert trail == [
        ("request.created", "alice"),
        ("review.created", "bob"),
        ("review.created", "carol"),
        ("request.approved", "carol"),
    ]
    created = next(e for e in results if e["action"] == "request.created")
    assert created["target_type"] == "accessrequest"
    assert created["data"]["resources"] == ["node/web-1"]
    assert created["data"]["reason"] == "INC-1"


def test_events_show_their_seal_sequence_and_chain(api, auditor, approved):
    unsealed = events(api(auditor).get(AUDIT))
    assert all(e["sealed"] is False and e["seq"] is None and e["mac"] == "" for e in unsealed)

    audit_seal()
    results = events(api(auditor).get(AUDIT))

    assert [e["seq"] for e in results] == list(range(len(results), 0, -1))
    assert all(e["sealed"] for e in results)
    for newer, older in pairwise(results):
        assert newer["prev_mac"] == older["mac"]
    assert results[-1]["prev_mac"] == ""


def test_verify_says_no_checkpoint_yet_before_the_first(api, auditor):
    response = api(auditor).get(f"{AUDIT}verify/")

    assert response.status_code == 200
    assert response.json() == {"checkpoint": None, "ok": None, "problem": "no checkpoint yet"}


def test_verify_returns_the_newest_checkpoints_result(api, auditor, approved, tmp_path):
    audit_checkpoint(path=tmp_path / "checkpoints.jsonl")
    newest = audit_checkpoint(path=tmp_path / "checkpoints.jsonl")

    body = api(auditor).get(f"{AUDIT}verify/").json()

    assert body["checkpoint"] == newest.pk
    assert body["ok"] is True
    assert body["seq"] == body["checked"] == AuditEvent.objects.count()
    assert body["checkpoints_checked"] == 1
    assert body["written"] is False
    assert body["unsealed"] == 0


@pytest.mark.parametrize("who", ["alice", "bob", "mallory", "stella"])
def test_only_holders_of_audit_read_the_verification(api, outsider, staff, requester, reviewer, tmp_path, who):
    audit_checkpoint(path=tmp_path / "checkpoints.jsonl")
    user = type(outsider).objects.get(username=who)

    response = api(user).get(f"{AUDIT}verify/")

    assert response.status_code == 403
    assert "seq" not in response.json()


def test_filter_by_action_and_actor(api, auditor, approved):
    client = api(auditor)

    reviews = events(client.get(AUDIT, {"action": "review.created"}))
    by_carol = events(client.get(AUDIT, {"actor": "carol"}))
    both = events(client.get(AUDIT, {"action": "review.created", "actor": "bob"}))

    assert [e["actor"] for e in reviews] == ["carol", "bob"]
    assert {(e["action"], e["actor"]) for e in by_carol} == {("review.created", "carol"), ("request.approved", "carol")}
    assert [(e["action"], e["actor"]) for e in both] == [("review.created", "bob")]
    assert events(client.get(AUDIT, {"action": "nothing.like.this"})) == []


def test_filter_by_target(api, auditor, requester, approved, web1):
    other = services.request_create(requester=requester, resources=[web1], reason="INC-2")

    results = events(api(auditor).get(AUDIT, {"target_type": "accessrequest", "target_id": str(other.pk)}))

    assert [e["action"] for e in results] == ["request.created"]


def test_filter_by_time_window(api, auditor, approved):
    first = AuditEvent.objects.order_by("id").first()
    last = AuditEvent.objects.order_by("id").last()
    client = api(auditor)

    after = events(client.get(AUDIT, {"since": last.created_at.isoformat()}))
    before = events(client.get(AUDIT, {"until": last.created_at.isoformat()}))

    assert [e["id"] for e in after] == [last.pk]
    assert last.pk not in [e["id"] for e in before]
    assert first.pk in [e["id"] for e in before]


def test_refusals_are_in_the_log(api, auditor, requester, outsider, prod_ssh, web1):
    made = services.request_create(requester=requester, resources=[web1], reason="INC-1")
    api(requester).post(f"/api/v1/requests/{made.pk}/reviews/", {"decision": "approve"})
    api(outsider).post(f"/api/v1/requests/{made.pk}/reviews/", {"decision": "approve"})

    results = events(api(auditor).get(AUDIT, {"target_id": str(made.pk)}))

    assert [(e["action"], e["actor"]) for e in results] == [
        ("review.refused_ineligible", "mallory"),
        ("review.refused_self", "alice"),
        ("request.created", "alice"),
    ]


@pytest.mark.parametrize(("query", "field"), [("since=yesterday", "since"), ("until=2026-13-45", "until")])
def test_bad_time_filters_are_400(api, auditor, query, field):
    response = api(auditor).get(f"{AUDIT}?{query}")

    assert response.status_code == 400
    assert field in response.json()


def test_audit_log_is_paginated(api, auditor, approved):
    body = api(auditor).get(AUDIT, {"page_size": 2}).json()

    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == AuditEvent.objects.count()
    assert len(body["results"]) == 2


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_audit_log_cannot_be_written_through_the_api(api, auditor, approved, method):
    event = AuditEvent.objects.order_by("id").first()
    url = AUDIT if method == "post" else f"{AUDIT}{event.pk}/"
    before = AuditEvent.objects.count()

    response = getattr(api(auditor), method)(url, {"action": "forged"})

    assert response.status_code == 405
    assert AuditEvent.objects.count() == before
    assert AuditEvent.objects.get(pk=event.pk).action == event.action


def test_an_auditor_who_is_also_a_reviewer_still_reads_everything(api, approved):
    lead = give_capabilities(make_user("lead-auditor", groups=("sre-leads",)), "audit")

    assert len(events(api(lead).get(AUDIT, {"page_size": 500}))) == AuditEvent.objects.count()
