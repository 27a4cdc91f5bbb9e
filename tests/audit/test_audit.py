"""The audit log: every transition is recorded with its actor, and tampering shows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record, audit_record_many, audit_seal
from requests_app.services import (
    grant_revoke,
    request_cancel,
    request_create,
    request_expire_pending,
    request_review,
)
from tests.conftest import audit_sealed_verify, make_role

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


# --- recording in bulk and sealing ---------------------------------------------


def test_recording_in_bulk_stores_what_recording_one_by_one_does(requester, ops):
    when = timezone.now()
    entry = {"action": "x.done", "actor": requester, "target": ops, "data": {"b": when, "a": [1, {"d": 2, "c": 3}]}}
    audit_record(**entry)
    bare = {"action": "x.done", "target_type": "thing", "target_id": "7"}
    before = timezone.now()
    assert audit_record_many([entry, bare]) == 2
    after = timezone.now()

    columns = ("actor_id", "actor_username", "action", "target_type", "target_id", "data")
    one, bulk, plain = AuditEvent.objects.order_by("id").values_list(*columns)
    assert (
        one
        == bulk
        == (requester.pk, "alice", "x.done", "role", str(ops.pk), {"a": [1, {"c": 3, "d": 2}], "b": str(when)})
    )
    assert plain == (None, "", "x.done", "thing", "7", {})
    # Rows of one call share the time of their transaction.
    times = set(AuditEvent.objects.filter(seq__isnull=True).order_by("id").values_list("created_at", flat=True)[1:])
    assert len(times) == 1 and before <= times.pop() <= after
    assert audit_sealed_verify().ok


def test_sealing_six_hundred_events_costs_the_queries_of_sealing_ten(db):
    audit_record(action="x.first")
    audit_seal()  # the chain head exists from here on, as in any running portal

    def sealed_with_queries(n: int) -> int:
        audit_record_many({"action": "x.bulk", "data": {"i": i}} for i in range(n))
        with CaptureQueriesContext(connection) as ctx:
            assert audit_seal() == n
        return len(ctx.captured_queries)

    assert sealed_with_queries(10) == sealed_with_queries(600)
    assert AuditEvent.objects.unsealed().count() == 0
    assert audit_sealed_verify().checked == 611


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
    assert audit_sealed_verify().ok


def test_an_event_rolls_back_with_the_change_it_describes(requester, ops):
    before = AuditEvent.objects.count()
    # The block is the transaction the failure rolls back.
    with pytest.raises(RuntimeError), transaction.atomic():  # noqa: PT012
        request_create(requester=requester, roles=[ops])
        raise RuntimeError("boom")
    assert AuditEvent.objects.count() == before
    assert audit_sealed_verify().ok


def test_an_event_survives_the_deletion_of_its_actor(ops):
    from tests.conftest import make_user

    gone = make_user("temp")
    audit_record(action="test.event", actor=gone, data={"n": 1})
    gone_id = gone.pk
    gone.delete()
    event = AuditEvent.objects.get(action="test.event")
    # Deleting the user wrote nothing to the log: the id stays as recorded and under the MAC.
    assert event.actor_id == gone_id
    assert event.actor_username == "temp"
    assert audit_sealed_verify().ok


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
    assert audit_sealed_verify().ok
