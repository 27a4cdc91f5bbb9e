#!/usr/bin/env python
"""The expiry sweep over a backlog of N ended grants: time and peak memory.

Loads N grants whose window closed (a tenth of them revoked, a fifth of them
role-based) over a few hundred users and requests into a throwaway database
(the test database of whatever DATABASE_URL names, SQLite by default), then
runs ``grants_end_expired`` in its own process, with no notification channel
and with one Slack channel that wants ``grant.ended``. Beside it, the floor
measured in the same run: one raw UPDATE setting ``ended_at`` on the same rows.
After the quiet sweep, ``audit_seal`` seals the events it wrote (also in its
own process): beat does that after commit, outside the sweep's time.

    python bench/sweep.py                   # N = 100000
    python bench/sweep.py --sizes 20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import Role, User  # noqa: E402
from audit.models import AuditEvent  # noqa: E402
from audit.services import audit_seal  # noqa: E402
from inventory.models import Resource  # noqa: E402
from requests_app.models import AccessRequest, Grant, Notification, NotificationChannel  # noqa: E402
from requests_app.services import ending, grants_end_expired  # noqa: E402

_audit_record_many = ending.audit_record_many

USERS = 200
GRANTS_PER_REQUEST = 50


def load(n: int) -> None:
    now = timezone.now()
    start = now - timedelta(hours=3)
    users = User.objects.bulk_create(
        [User(username=f"user{i:04d}", email=f"user{i}@example.com") for i in range(USERS)]
    )
    users = list(User.objects.order_by("pk"))
    roles = [
        Role.objects.create(name=f"role-{k}", resource_kinds=[k], resource_labels={}, logins=["ops"])
        for k in ("node", "db")
    ]
    Resource.objects.bulk_create(
        [Resource(kind="node", name=f"web-{i:05d}", address=f"10.0.{i // 256}.{i % 256}:22") for i in range(2000)]
    )
    resources = list(Resource.objects.order_by("pk"))
    requests = AccessRequest.objects.bulk_create(
        [
            AccessRequest(
                requester=users[i % USERS],
                duration=timedelta(hours=1),
                state="approved",
                reason="INC-1",
                created_at=start,
                pending_expires_at=start + timedelta(hours=1),
            )
            for i in range(-(-n // GRANTS_PER_REQUEST))
        ],
        batch_size=2000,
    )
    if requests[0].pk is None:  # backends that do not return ids
        requests = list(AccessRequest.objects.order_by("pk"))
    for first in range(0, n, 10_000):
        grants = []
        for i in range(first, min(n, first + 10_000)):
            req = requests[i // GRANTS_PER_REQUEST]
            grants.append(
                Grant(
                    request=req,
                    user_id=req.requester_id,
                    role=roles[i % 2],
                    resource=None if i % 5 == 0 else resources[i % len(resources)],
                    starts_at=start,
                    expires_at=start + timedelta(hours=1, seconds=i % 3600),
                    revoked_at=start + timedelta(minutes=5) if i % 10 == 3 else None,
                    created_at=start,
                )
            )
        Grant.objects.bulk_create(grants, batch_size=2000)


def _child(step: str, db_name: str) -> dict:
    connection.settings_dict["NAME"] = db_name
    started = time.perf_counter()
    if step == "raw":
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE requests_app_grant SET ended_at = %s "
                "WHERE ended_at IS NULL AND (expires_at <= %s OR revoked_at IS NOT NULL)",
                [timezone.now(), timezone.now()],
            )
            ended = cursor.rowcount
    elif step == "seal":
        ended = audit_seal()
    else:
        ended = grants_end_expired()
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "ended": ended, "rss_mib": rss, "audit_s": audit_seconds[0]}


# Time spent inside audit_record_many, which the sweep calls but does not own (on SQLite: on
# PostgreSQL the sweep's one statement per batch writes the audit rows itself, and this stays None).
audit_seconds: list[float | None] = [None]


def _timed_audit(entries, **kwargs):
    started = time.perf_counter()
    try:
        return _audit_record_many(entries, **kwargs)
    finally:
        audit_seconds[0] = (audit_seconds[0] or 0.0) + time.perf_counter() - started


def _run(step: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", step, str(connection.settings_dict["NAME"])],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _reset() -> None:
    Grant.objects.update(ended_at=None)
    Notification.objects.all().delete()


def bench(n: int, *, channel: bool = True) -> list[tuple]:
    load(n)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    raw = _run("raw")
    _reset()
    quiet = _run("sweep")
    assert quiet["ended"] == n
    assert AuditEvent.objects.filter(action="grant.ended").count() == n
    events = AuditEvent.objects.count()
    seal = _run("seal")
    assert seal["ended"] == events == AuditEvent.objects.sealed().count()
    _reset()
    rows = [
        (n, "sweep, no channel", quiet, raw),
        (n, "raw UPDATE (floor)", raw, raw),
        (n, f"audit_seal, {events:,} events", seal, raw),
    ]
    if not channel:
        return rows
    NotificationChannel.objects.create(
        name="ops-slack", kind="slack", url="https://hooks.invalid/x", events=["grant.ended"]
    )
    notifying = _run("sweep")
    assert notifying["ended"] == n
    assert Notification.objects.count() == n
    return [*rows, (n, "sweep, one Slack channel", notifying, raw)]


def main(sizes: list[int] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--no-channel", action="store_true", help="skip the sweep with a Slack channel")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args([] if sizes is not None else None)
    if args.child:
        ending.audit_record_many = _timed_audit  # type: ignore[assignment]
        print(json.dumps(_child(*args.child)))
        return
    if sizes is None:  # run.py, calling with sizes, has set up the test environment already
        setup_test_environment()
    rows = []
    for n in sizes or args.sizes:
        if connection.vendor == "sqlite":
            connection.settings_dict["TEST"]["NAME"] = str(Path(tempfile.mkdtemp()) / f"bench-sweep-{n}.sqlite3")
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
        try:
            rows += bench(n, channel=not args.no_channel)
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)
    print(f"\ndatabase: {connection.vendor}; grants_end_expired in its own process\n")
    header = (
        f"| {'N':>7} | {'step':<26} | {'seconds':>7} | {'of which audit_record_many':>26} "
        f"| {'peak RSS MiB':>12} | {'x floor':>7} |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for n, step, m, floor in rows:
        ratio = m["seconds"] / floor["seconds"] if floor["seconds"] else 0.0
        audit = f"{m['audit_s']:.1f}" if m.get("audit_s") is not None else ""
        if not audit and step.startswith("sweep") and connection.vendor == "postgresql":
            audit = "in the statement"
        print(f"| {n:>7} | {step:<26} | {m['seconds']:>7.1f} | {audit:>26} | {m['rss_mib']:>12.0f} | {ratio:>7.1f} |")


if __name__ == "__main__":
    main()
