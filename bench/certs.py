#!/usr/bin/env python
"""SSH certificate issuance: in-process and over HTTP, beside the raw signing floor and the access check.

The floors are what no implementation can beat: cryptography's certificate
builder and an Ed25519 signature with the CA key already in memory, and one
small row inserted and committed (an issuance commits its record and audit
event once, so the database's commit latency bounds it too). In-process
is ``certificate_issue``: one read (the grant with eligibility and the
signing CA) and one write (on PostgreSQL a single statement: the grant
locked and re-checked, the certificate and its audit event inserted); the
next certificate for the same grant confirms the remembered read in that
write and skips the read, so both are shown. Over HTTP it is ``POST /api/v1/grants/{id}/certificate/`` on
gunicorn (production settings, 2 sync workers, 8 keep-alive clients), shown
against the access check on the same server in the same run.

    python bench/certs.py                    # SQLite; DATABASE_URL=postgres://… for PostgreSQL
    python bench/certs.py --calls 500 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import timedelta

from serving import Load, analyze, gunicorn, load, queries_per_call, table, throwaway_database

from cryptography.hazmat.primitives import serialization  # isort: skip - serving.py sets Django up first
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import ssh
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import ApiToken, Role, User
from inventory.models import Resource
from requests_app.credentials import certificates
from requests_app.credentials.ca import ssh_ca_init
from requests_app.credentials.certificates import certificate_issue
from requests_app.models import AccessRequest, Grant


def public_line() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def raw_sign_rate(calls: int) -> float:
    ca = ed25519.Ed25519PrivateKey.generate()
    subject = ed25519.Ed25519PrivateKey.generate().public_key()
    now = int(time.time())
    started = time.perf_counter()
    for serial in range(1, calls + 1):
        (
            ssh.SSHCertificateBuilder()
            .public_key(subject)
            .serial(serial)
            .type(ssh.SSHCertificateType.USER)
            .key_id(b"bench@jitportal")
            .valid_principals([b"ubuntu@node-1"])
            .valid_after(now - 60)
            .valid_before(now + 3600)
            .add_extension(b"permit-pty", b"")
            .sign(ca)
            .public_bytes()
        )
    return calls / (time.perf_counter() - started)


def commit_rate(calls: int) -> float:
    """One small INSERT committed on its own, the durability floor every issuance pays once."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_commit (id integer PRIMARY KEY, note varchar(64))")
    started = time.perf_counter()
    for n in range(calls):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_commit (id, note) VALUES (%s, %s)", [n, "certificate.issued"])
    return calls / (time.perf_counter() - started)


def setup() -> tuple[Grant, User, str, str]:
    Resource.objects.bulk_create(Resource(kind="node", name=f"node-{i}", labels={"env": "prod"}) for i in range(100))
    target = Resource.objects.order_by("pk").first()
    engineers = Group.objects.create(name="engineers")
    role = Role.objects.create(name="prod-ssh", resource_kinds=["node"], resource_labels={"env": ["prod"]})
    role.logins = ["ubuntu"]
    role.save()
    role.requestable_by.add(engineers)
    user = User.objects.create_user("bench", password="x")
    user.groups.add(engineers)
    now = timezone.now()
    access_request = AccessRequest.objects.create(
        requester=user, duration=timedelta(hours=1), state="approved", pending_expires_at=now + timedelta(hours=1)
    )
    access_request.roles.add(role)
    grant = Grant.objects.create(
        request=access_request,
        user=user,
        role=role,
        resource=target,
        starts_at=now - timedelta(minutes=1),
        expires_at=now + timedelta(hours=2),
    )
    ssh_ca_init()
    return grant, user, ApiToken.objects.create(user=user)[1], target.name


def in_process(grant: Grant, user: User, calls: int, *, first: bool = False) -> tuple[float, float, float, int]:
    """``certificate_issue`` again and again; with ``first``, each as if the first for its grant (read + write)."""
    key = public_line()
    certificate_issue(grant=grant, user=user, public_key=key)  # warm: the CA read and its key decrypted
    times, counts = [], set()
    for _ in range(calls):
        if first:
            certificates._remembered.clear()
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            certificate_issue(grant=grant, user=user, public_key=key)
            times.append(time.perf_counter() - started)
        counts.add(sum(1 for q in ctx.captured_queries if not q["sql"].lstrip().startswith(("SAVEPOINT", "RELEASE"))))
    times.sort()
    return len(times) / sum(times), statistics.median(times) * 1000, times[int(len(times) * 0.95)] * 1000, max(counts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="HTTP rows run in turn this many times; the best counts")
    args = parser.parse_args(argv)

    with throwaway_database("certs") as url:
        grant, user, token, host = setup()
        analyze()
        floor = raw_sign_rate(args.calls * 5)
        rate, p50, p95, queries = in_process(grant, user, args.calls)
        first_rate, first_p50, first_p95, first_queries = in_process(grant, user, args.calls, first=True)
        committed = commit_rate(args.calls)
        rows = [
            ["raw builder + Ed25519 sign (floor)", f"{floor:.0f}", "1.00x floor", "", "", "0"],
            ["one INSERT + COMMIT (floor)", f"{committed:.0f}", f"{committed / floor:.3f}x floor", "", "", "1"],
            [
                "certificate_issue in-process, first for its grant",
                f"{first_rate:.0f}",
                f"{first_rate / floor:.3f}x floor",
                f"{first_p50:.2f}",
                f"{first_p95:.2f}",
                str(first_queries),
            ],
            [
                "certificate_issue in-process",
                f"{rate:.0f}",
                f"{rate / floor:.3f}x floor",
                f"{p50:.2f}",
                f"{p95:.2f}",
                str(queries),
            ],
        ]
        check = f"/api/v1/access-check/?resource=node/{host}&login=ubuntu"
        issue = f"/api/v1/grants/{grant.pk}/certificate/"
        body = json.dumps({"public_key": public_line()}).encode()
        http_queries = {
            "check": queries_per_call("GET", check, token=token),
            "issue": queries_per_call("POST", issue, token=token, data=json.loads(body), expect=201),
        }
        best: dict[str, Load] = {}
        with gunicorn(url) as port:
            for _ in range(args.rounds):
                for name, method, path, expect in (("check", "GET", check, 200), ("issue", "POST", issue, 201)):
                    result = load(
                        port,
                        method,
                        path,
                        token=token,
                        body=(lambda: body) if method == "POST" else None,
                        expect=expect,
                        concurrency=args.concurrency,
                        seconds=args.seconds,
                    )
                    if name not in best or result.rate > best[name].rate:
                        best[name] = result
        for name, label in (("check", "access check over HTTP"), ("issue", "certificate over HTTP")):
            result = best[name]
            rows.append(
                [
                    label,
                    f"{result.rate:.0f}",
                    f"{result.rate / best['check'].rate:.2f}x check",
                    f"{result.p50_ms:.1f}",
                    f"{result.p95_ms:.1f}",
                    str(http_queries[name]),
                ]
            )
        print(
            table(
                f"SSH certificate issuance: {connection.vendor}, {args.calls} in-process calls, gunicorn 2 sync "
                f"workers, {args.concurrency} clients, {args.seconds:g}s per HTTP row",
                ["path", "per s", "ratio", "p50 ms", "p95 ms", "queries"],
                rows,
            )
        )


if __name__ == "__main__":
    main()
