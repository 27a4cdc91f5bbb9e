"""Migrations of the audit log: the move into its own app, and the upgrade to the keyed MAC chain.

Each test writes a log the way an installation holds it before upgrading (the
legacy SHA-256 chain, through the historical models), migrates forward and
checks what the current code makes of it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.models import AuditEvent
from audit.services import audit_record, audit_verify
from tests.conftest import audit_sealed_verify, make_user

# The newest migrations from before the move (audit 0001 and requests_app 0004 take it).
BEFORE_MOVE = [("requests_app", "0003_drop_review_permission"), ("audit", None)]
AFTER_MOVE = [("requests_app", "0004_audit_moves_to_its_app")]
# The newest audit migration with the legacy hash chain.
LEGACY = [("audit", "0001_initial")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


def migrate_to_latest() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def table_names() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


def legacy_hash(prev_hash: str, created_at: datetime, actor: str, action: str, data: dict) -> str:
    # AuditEvent.compute_hash before the MAC chain; target fields are left empty here.
    payload = {
        "prev": prev_hash,
        "at": created_at.isoformat(),
        "actor": actor,
        "action": action,
        "target_type": "accessrequest",
        "target_id": "7",
        "data": data,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def write_legacy_chain(apps, *, app_label: str, count: int, actor=None) -> list[int]:
    """A legacy chain of ``count`` events and its head, as the old code wrote them; returns the ids."""
    Event = apps.get_model(app_label, "AuditEvent")
    Head = apps.get_model(app_label, "AuditChainHead")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    prev_hash, ids = "", []
    for n in range(count):
        at = start + timedelta(minutes=n)
        data = {"n": n}
        digest = legacy_hash(prev_hash, at, "alice", f"request.step{n}", data)
        event = Event.objects.create(
            created_at=at,
            actor_id=actor.pk if actor else None,
            actor_username="alice",
            action=f"request.step{n}",
            target_type="accessrequest",
            target_id="7",
            data=data,
            prev_hash=prev_hash,
            hash=digest,
        )
        ids.append(event.pk)
        prev_hash = digest
    Head.objects.update_or_create(id=1, defaults={"last_hash": prev_hash, "count": count})
    return ids


@pytest.mark.django_db(transaction=True)
def test_moving_the_audit_log_keeps_its_tables_rows_chain_and_content_types():
    ContentType.objects.get_for_model(AuditEvent)
    try:
        old = migrate(BEFORE_MOVE)
        OldEvent = old.get_model("requests_app", "AuditEvent")
        assert OldEvent._meta.db_table == "requests_app_auditevent"
        ids = write_legacy_chain(old, app_label="requests_app", count=2)
        assert not ContentType.objects.filter(app_label="audit", model="auditevent").exists()
        assert ContentType.objects.filter(app_label="requests_app", model="auditevent").exists()
        migrate(AFTER_MOVE)
    finally:
        migrate_to_latest()

    assert {"requests_app_auditevent", "requests_app_auditchainhead"} <= table_names()
    assert AuditEvent.objects.get(pk=ids[0]).data == {"n": 0}
    # Two carried-over events and the upgrade's own record.
    assert audit_verify().ok and audit_verify().checked == 3
    # Admin history and permissions on the model follow it.
    assert ContentType.objects.filter(app_label="audit", model="auditevent").exists()
    assert not ContentType.objects.filter(app_label="requests_app", model="auditevent").exists()
    audit_record(action="request.cancelled", target_type="accessrequest", target_id="1")
    assert audit_sealed_verify().checked == 4


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_carries_a_legacy_chain_into_the_mac_chain(tmp_path):
    actor = make_user("alice")
    try:
        old = migrate(LEGACY)
        ids = write_legacy_chain(old, app_label="audit", count=5, actor=actor)
    finally:
        migrate_to_latest()

    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.pk for e in events[:5]] == ids
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.actor_id for e in events[:5]] == [actor.pk] * 5
    upgraded = events[-1]
    assert upgraded.action == "audit.chain_upgraded"
    assert upgraded.data["events"] == 5
    assert upgraded.data["ok"] is True
    assert upgraded.data["first_bad_id"] is None
    assert upgraded.data["head_hash"] == legacy_hash(
        _legacy_prev(), datetime(2026, 1, 1, 0, 4, tzinfo=UTC), "alice", "request.step4", {"n": 4}
    )
    report = audit_verify()
    assert (report.ok, report.checked) == (True, 6)

    # New events chain on after the carried-over ones.
    audit_record(action="request.created")
    assert audit_sealed_verify().checked == 7

    # An old event edited after the upgrade is caught like any other.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE requests_app_auditevent DISABLE TRIGGER USER")
        else:
            cursor.execute("DROP TRIGGER audit_event_append_only")
        cursor.execute("UPDATE requests_app_auditevent SET actor_username = 'mallory' WHERE id = %s", [ids[1]])
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE requests_app_auditevent ENABLE TRIGGER USER")
    report = audit_verify()
    assert (report.ok, report.first_bad_seq, report.first_bad_id) == (False, 2, ids[1])


def _legacy_prev() -> str:
    """The legacy hash of the fourth event, which the fifth links to."""
    prev = ""
    for n in range(4):
        prev = legacy_hash(
            prev, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n), "alice", f"request.step{n}", {"n": n}
        )
    return prev


@pytest.mark.django_db(transaction=True)
def test_a_broken_legacy_chain_is_recorded_by_the_upgrade_not_laundered():
    try:
        old = migrate(LEGACY)
        ids = write_legacy_chain(old, app_label="audit", count=4)
        # Someone edited the third event under the old scheme.
        old.get_model("audit", "AuditEvent").objects.filter(pk=ids[2]).update(action="request.forged")
    finally:
        migrate_to_latest()

    upgraded = AuditEvent.objects.get(action="audit.chain_upgraded")
    assert upgraded.seq == 5
    assert upgraded.data["ok"] is False
    assert upgraded.data["first_bad_id"] == ids[2]
    assert upgraded.data["events"] == 4
    assert "do not match its hash" in upgraded.data["problem"]
    # The finding is itself sealed: removing or editing it breaks the chain.
    assert audit_verify().ok


@pytest.mark.django_db(transaction=True)
def test_an_empty_log_upgrades_to_an_empty_chain():
    try:
        migrate(LEGACY)
    finally:
        migrate_to_latest()
    assert AuditEvent.objects.count() == 0
    assert audit_verify().ok
