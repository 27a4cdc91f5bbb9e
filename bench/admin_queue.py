#!/usr/bin/env python
"""The admin's review queue with ``--pending`` requests awaiting review, beside the admin index.

A reviewer (a member of the role's reviewer group, no staff flag) opens the
request changelist, which starts on "Awaiting my review"; the floor is the
admin index for the same user in the same run. In-process with Django's test
client (the whole middleware stack and templates), on a throwaway database
(SQLite by default, DATABASE_URL for PostgreSQL).

    python bench/admin_queue.py
    python bench/admin_queue.py --pending 10000 --calls 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

from serving import analyze, table, throwaway_database

from django.contrib.auth.models import Group  # isort: skip - serving.py sets Django up first
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role, User
from inventory.models import Resource
from requests_app.models import AccessRequest

CHUNK = 2000


def setup(pending: int) -> User:
    engineers, leads = Group.objects.create(name="engineers"), Group.objects.create(name="leads")
    role = Role.objects.create(name="prod-ssh", resource_kinds=["node"], resource_labels={"env": ["prod"]})
    role.requestable_by.add(engineers)
    role.reviewers.add(leads)
    reviewer = User.objects.create_user("reviewer", password="x")
    reviewer.groups.add(leads)
    requesters = [User.objects.create_user(f"engineer{i}", password="x") for i in range(50)]
    hosts = Resource.objects.bulk_create(
        Resource(kind="node", name=f"web-{i}", labels={"env": "prod"}) for i in range(20)
    )
    if hosts[0].pk is None:
        hosts = list(Resource.objects.order_by("pk"))
    now = timezone.now()
    for start in range(0, pending, CHUNK):
        made = AccessRequest.objects.bulk_create(
            AccessRequest(
                requester=requesters[i % len(requesters)],
                reason=f"INC-{i}: disk full on the web tier",
                duration=timedelta(minutes=30),
                created_at=now - timedelta(seconds=i),
                pending_expires_at=now + timedelta(hours=24),
            )
            for i in range(start, min(pending, start + CHUNK))
        )
        AccessRequest.roles.through.objects.bulk_create(
            AccessRequest.roles.through(accessrequest_id=r.pk, role_id=role.pk) for r in made
        )
        AccessRequest.resources.through.objects.bulk_create(
            AccessRequest.resources.through(accessrequest_id=r.pk, resource_id=hosts[n % len(hosts)].pk)
            for n, r in enumerate(made)
        )
    return reviewer


def measure(client: Client, url: str, calls: int) -> tuple[float, float, int]:
    client.get(url)  # warm: templates, the session
    times, counts = [], set()
    for _ in range(calls):
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
        counts.add(len(ctx.captured_queries))
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], max(counts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args(argv)

    with throwaway_database("admin_queue"):
        reviewer = setup(args.pending)
        analyze()
        client = Client()
        client.force_login(reviewer)
        index = measure(client, reverse("admin:index"), args.calls)
        queue = measure(client, reverse("admin:requests_app_accessrequest_changelist"), args.calls)
        rows = [
            ["admin index (floor)", f"{index[0]:.1f}", f"{index[1]:.1f}", "1.00x", str(index[2])],
            ["review queue", f"{queue[0]:.1f}", f"{queue[1]:.1f}", f"{queue[0] / index[0]:.2f}x", str(queue[2])],
        ]
        print(
            table(
                f"admin review queue: {connection.vendor}, {args.pending} pending, {args.calls} calls per row",
                ["page", "p50 ms", "p95 ms", "p50 vs floor", "queries"],
                rows,
            )
        )


if __name__ == "__main__":
    main()
