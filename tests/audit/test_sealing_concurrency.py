"""Recording and sealing at once, on PostgreSQL: the chain stays gapless and verifies.

Writers insert unsealed events in their own transactions, some held open while
sealers run, so ids commit out of order; several sealers run at the same time
and queue on the head. SQLite serialises every writer, so this only means
something (and only runs) on PostgreSQL.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from audit.models import AuditChainHead, AuditEvent
from audit.services import audit_record, audit_record_many, audit_seal, audit_verify
from tests.requests_app.test_concurrency import run_at_once

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="concurrency needs PostgreSQL row locks; set DATABASE_URL=postgres://... to run",
    ),
]

WRITERS, SEALERS, EACH = 6, 4, 30


def test_concurrent_writers_and_sealers_give_a_gapless_chain_that_verifies():
    stop = threading.Event()

    def writer(n: int):
        def run() -> int:
            for i in range(EACH):
                with transaction.atomic():
                    audit_record(action="test.write", target_type="writer", target_id=str(n), data={"i": i})
                    if i % 7 == 0:
                        # A transaction left open while others commit: its id commits out of order.
                        time.sleep(0.01)
                        audit_record_many([{"action": "test.batch", "data": {"i": i}}] * 3)
            return n

        return run

    def sealer() -> int:
        sealed = 0
        while not stop.is_set():
            sealed += audit_seal(batch_size=5)
        return sealed + audit_seal(batch_size=5)

    def writers_then_stop() -> int:
        results = run_at_once([writer(n) for n in range(WRITERS)])
        stop.set()
        assert all(not isinstance(r, BaseException) for r in results), results
        return 0

    results = run_at_once([writers_then_stop] + [sealer] * SEALERS, timeout=120)
    assert all(not isinstance(r, BaseException) for r in results), results

    total = WRITERS * (EACH + 3 * len(range(0, EACH, 7)))
    # Every event was sealed exactly once, by one of the sealers.
    assert sum(r for r in results[1:]) + audit_seal() == total
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, total + 1))
    assert AuditChainHead.objects.get().last_seq == total
    report = audit_verify(batch_size=17)
    assert (report.ok, report.checked, report.unsealed) == (True, total, 0)
