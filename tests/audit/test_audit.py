"""The audit log: every transition is recorded with its actor, and tampering shows."""

from __future__ import annotations

import json
from datetime import timedelta
from itertools import pairwise

import pytest
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError
from django.db import connection, connections, transaction
from django.utils import timezone

from audit.models import AuditChainHead, AuditEvent
from audit.services import audit_record, audit_verify
from requests_app.services import (
    grant_revoke,
    request_cancel,
    request_create,
    request_expire_pending,
    request_review,
)
from tests.conftest import make_role

pytestmark = pytest.mark.django_db

TABLE = AuditEvent._meta.db_table


@pytest.fixture
def ops(db):
    return make_role("prod-ops", approvals=1)


def trail(target) -> list[tuple[str, str]]:
    """(action, actor username) of the events about ``target``, oldest first."""
    return list(
        AuditEvent.objects.filter(target_id=str(target.pk), target_type=target._meta.model_name)
        .order_by("id")
        .values_list("action", "actor_username")
    )


@pytest.fixture
def chain(requester, reviewer, ops):
    """Five chained events; returns their ids oldest first."""
    for _ in range(2):
        req = request_create(requester=requester, roles=[ops], reason="INC-1")
        request_review(request=req, reviewer=reviewer, decision="deny", reason="not now")
    ids = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    assert len(ids) == 6
    return ids


def raw(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


# --- every transition is recorded ---------------------------------------------


def test_approval_path_records_each_step_with_its_actor(requester, reviewer, revoker, ops):
    req = request_create(requester=requester, roles=[ops], reason="INC-1")
    request_review(request=req, reviewer=reviewer, decision="approve", reason="ok")
    grant = req.grants.get()
    grant_revoke(grant=grant, by=revoker, reason="incident over")
    assert trail(req) == [
        ("request.created", "alice"),
        ("review.created", "bob"),
        ("request.approved", "bob"),
        ("request.revoked", "ray"),
    ]
    assert trail(grant) == [("grant.revoked", "ray")]
    revoked = AuditEvent.objects.get(action="grant.revoked")
    assert revoked.actor == revoker
    assert revoked.data == {"request": str(req.pk), "user": "alice", "reason": "incident over"}
    review = AuditEvent.objects.get(action="review.created")
    assert review.data["decision"] == "approve"
    assert review.data["reason"] == "ok"


def test_denial_is_recorded_with_the_reviewer(requester, reviewer, ops):
    req = request_create(requester=requester, roles=[ops])
    request_review(request=req, reviewer=reviewer, decision="deny", reason="not now")
    assert trail(req)[-2:] == [("review.created", "bob"), ("request.denied", "bob")]
    assert AuditEvent.objects.get(action="request.denied").data["state"] == "denied"


def test_cancel_is_recorded_with_the_requester(requester, ops):
    req = request_create(requester=requester, roles=[ops])
    request_cancel(request=req, user=requester)
    assert trail(req) == [("request.created", "alice"), ("request.cancelled", "alice")]


def test_expiry_is_recorded_without_an_actor(requester, ops):
    req = request_create(requester=requester, roles=[ops])
    request_expire_pending(now=timezone.now() + timedelta(days=2))
    assert trail(req) == [("request.created", "alice"), ("request.expired", "")]
    assert AuditEvent.objects.get(action="request.expired").actor is None


def test_refused_reviews_are_recorded_though_their_transaction_rolled_back(requester, outsider, ops):
    req = request_create(requester=requester, roles=[ops])
    for reviewer in (requester, outsider):
        with pytest.raises(Exception):  # noqa: B017, PT011 - the kind is tested in test_services
            request_review(request=req, reviewer=reviewer, decision="approve")
    assert trail(req) == [
        ("request.created", "alice"),
        ("review.refused_self", "alice"),
        ("review.refused_ineligible", "mallory"),
    ]
    assert audit_verify().ok


def test_an_event_rolls_back_with_the_change_it_describes(requester, ops):
    before = AuditEvent.objects.count()
    # The block is the transaction the failure rolls back.
    with pytest.raises(RuntimeError), transaction.atomic():  # noqa: PT012
        request_create(requester=requester, roles=[ops])
        raise RuntimeError("boom")
    assert AuditEvent.objects.count() == before
    assert audit_verify().ok


def test_an_event_survives_the_deletion_of_its_actor(ops):
    from tests.conftest import make_user

    gone = make_user("temp")
    audit_record(action="test.event", actor=gone, data={"n": 1})
    gone.delete()
    event = AuditEvent.objects.get(action="test.event")
    assert event.actor is None
    assert event.actor_username == "temp"
    assert audit_verify().ok


# --- the chain ------------------------------------------------------------------------


def test_empty_log_verifies():
    report = audit_verify()
    assert report.ok
    assert report.checked == 0


def test_each_event_links_to_the_one_before(chain):
    events = list(AuditEvent.objects.order_by("id"))
    assert events[0].prev_hash == ""
    for before, after in pairwise(events):
        assert after.prev_hash == before.hash
    assert all(e.hash == e.compute_hash() for e in events)
    head = AuditChainHead.objects.get()
    assert (head.last_hash, head.count) == (events[-1].hash, len(events))


def test_intact_chain_verifies(chain):
    report = audit_verify()
    assert report.ok
    assert report.checked == len(chain)
    assert audit_verify(batch_size=2).ok


def test_changing_a_rows_data_is_detected_at_that_row(chain):
    target = chain[2]
    value = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    raw(f"UPDATE {TABLE} SET data = {value} WHERE id = %s", [json.dumps({"decision": "approve"}), target])
    report = audit_verify()
    assert not report.ok
    assert report.first_bad_id == target
    assert report.checked == 2
    assert "altered" in report.problem


def test_changing_a_rows_actor_is_detected_at_that_row(chain):
    raw(f"UPDATE {TABLE} SET actor_username = %s WHERE id = %s", ["someone-else", chain[1]])
    report = audit_verify(batch_size=2)
    assert not report.ok
    assert report.first_bad_id == chain[1]


def test_deleting_a_middle_row_is_detected_at_the_next_row(chain):
    raw(f"DELETE FROM {TABLE} WHERE id = %s", [chain[3]])
    report = audit_verify()
    assert not report.ok
    assert report.first_bad_id == chain[4]
    assert "removed" in report.problem


def test_deleting_the_oldest_row_is_detected(chain):
    raw(f"DELETE FROM {TABLE} WHERE id = %s", [chain[0]])
    report = audit_verify()
    assert not report.ok
    assert report.first_bad_id == chain[1]


def test_deleting_the_newest_row_is_detected_by_the_chain_head(chain):
    raw(f"DELETE FROM {TABLE} WHERE id = %s", [chain[-1]])
    report = audit_verify()
    assert not report.ok
    assert report.checked == len(chain) - 1
    # No surviving row is bad; the head, which records the newest hash, disagrees.
    assert report.first_bad_id is None
    assert "newest events were removed" in report.problem


def test_rewriting_a_row_and_its_hash_is_detected_at_the_next_row(chain):
    event = AuditEvent.objects.get(pk=chain[2])
    event.data = {"forged": True}
    forged = event.compute_hash()
    raw(f"UPDATE {TABLE} SET hash = %s WHERE id = %s", [forged, chain[2]])
    value = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    raw(f"UPDATE {TABLE} SET data = {value} WHERE id = %s", [json.dumps({"forged": True}), chain[2]])
    report = audit_verify()
    assert not report.ok
    assert report.first_bad_id == chain[3]


# --- append-only -------------------------------------------------------------------------


def test_saving_an_existing_event_raises(chain):
    event = AuditEvent.objects.get(pk=chain[0])
    event.action = "request.approved"
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    assert AuditEvent.objects.get(pk=chain[0]).action == "request.created"


def test_deleting_an_event_raises(chain):
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.get(pk=chain[0]).delete()
    assert AuditEvent.objects.count() == len(chain)


def test_queryset_update_and_delete_raise(chain):
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.all().update(action="x")
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.filter(pk=chain[0]).update(data={})
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.all().delete()
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.filter(pk=chain[-1]).delete()
    events = list(AuditEvent.objects.filter(pk=chain[0]))
    events[0].action = "x"
    # bulk_update runs update() in an atomic block without a savepoint: give it one.
    with pytest.raises(TypeError, match="append-only"), transaction.atomic():
        AuditEvent.objects.bulk_update(events, ["action"])
    assert AuditEvent.objects.count() == len(chain)
    assert audit_verify().ok


# --- manage.py verify_audit ---------------------------------------------------------------


def test_verify_audit_command_reports_an_intact_chain(chain, capsys):
    call_command("verify_audit")
    assert capsys.readouterr().out.strip() == f"audit chain intact: {len(chain)} events"


def test_verify_audit_command_names_the_first_break(chain):
    raw(f"DELETE FROM {TABLE} WHERE id = %s", [chain[2]])
    with pytest.raises(CommandError, match=f"event {chain[3]}"):
        call_command("verify_audit")


def test_verify_audit_command_reports_a_removed_newest_event(chain):
    raw(f"DELETE FROM {TABLE} WHERE id = %s", [chain[-1]])
    with pytest.raises(CommandError, match="newest events were removed"):
        call_command("verify_audit")


def test_verify_audit_command_exits_0_when_intact_and_1_when_broken(chain, capsys, monkeypatch):
    # run_from_argv closes every connection when it ends, which would end the
    # test's transaction on PostgreSQL.
    monkeypatch.setattr(connections, "close_all", lambda: None)
    execute_from_command_line(["manage.py", "verify_audit"])
    assert "audit chain intact" in capsys.readouterr().out
    raw(f"DELETE FROM {TABLE} WHERE id = %s", [chain[1]])
    with pytest.raises(SystemExit) as exc:
        execute_from_command_line(["manage.py", "verify_audit"])
    assert exc.value.code == 1
    assert f"event {chain[2]}" in capsys.readouterr().err
