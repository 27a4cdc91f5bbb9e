"""The audit log moved from requests_app into its own app without moving a row."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.models import AuditEvent
from audit.services import audit_record, audit_verify

# The newest migrations from before the move (audit 0001 and requests_app 0004 take it).
BEFORE = [("requests_app", "0003_drop_review_permission"), ("audit", None)]
AFTER = [("requests_app", "0004_audit_moves_to_its_app")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


def table_names() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


@pytest.mark.django_db(transaction=True)
def test_moving_the_audit_log_keeps_its_tables_rows_chain_and_content_types():
    # The chain is written by the current code; it is what an installation holds before upgrading.
    first = audit_record(action="request.created", target_type="accessrequest", target_id="1", data={"n": 1})
    audit_record(action="request.approved", target_type="accessrequest", target_id="1")
    ContentType.objects.get_for_model(AuditEvent)
    try:
        old = migrate(BEFORE)
        OldEvent = old.get_model("requests_app", "AuditEvent")
        assert OldEvent._meta.db_table == "requests_app_auditevent"
        assert list(OldEvent.objects.order_by("id").values_list("action", flat=True)) == [
            "request.created",
            "request.approved",
        ]
        assert not ContentType.objects.filter(app_label="audit", model="auditevent").exists()
        assert ContentType.objects.filter(app_label="requests_app", model="auditevent").exists()
        migrate(AFTER)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert {"requests_app_auditevent", "requests_app_auditchainhead"} <= table_names()
    assert AuditEvent.objects.get(pk=first.pk).data == {"n": 1}
    assert audit_verify().ok and audit_verify().checked == 2
    # Admin history and permissions on the model follow it.
    assert ContentType.objects.filter(app_label="audit", model="auditevent").exists()
    assert not ContentType.objects.filter(app_label="requests_app", model="auditevent").exists()
    audit_record(action="request.cancelled", target_type="accessrequest", target_id="1")
    assert audit_verify().checked == 3
