#!/usr/bin/env python
"""Latency and SQL queries per call for resource search and the access check.

Loads N resources into a throwaway database (the test database of whatever
DATABASE_URL names, SQLite by default), then calls the real API views
in-process and prints a table. Query counts must not grow with N.

    python bench/run.py                 # N = 10000 and 100000
    python bench/run.py --sizes 1000 --calls 50
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
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

from django.contrib.auth.models import Group  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402
from search import main as search_main  # noqa: E402  (bench/search.py: resource search at scale)

from accounts.models import Role, User  # noqa: E402
from accounts.scope import role_scope_sync  # noqa: E402
from inventory.models import Resource, ResourceLabel  # noqa: E402
from requests_app.models import AccessRequest, Grant  # noqa: E402

KINDS = ["node", "db", "kube_cluster", "app", "windows_desktop"]
ENVS = ["prod", "staging", "dev"]
TEAMS = [f"team{i}" for i in range(20)]
REGIONS = ["eu-west", "eu-central", "us-east", "ap-south"]


def load(n: int) -> None:
    batch = 5000
    for start in range(0, n, batch):
        rows = []
        for i in range(start, min(n, start + batch)):
            labels = {"env": ENVS[i % 3], "team": TEAMS[i % 20], "region": REGIONS[i % 4]}
            rows.append(
                Resource(
                    kind=KINDS[i % 5],
                    name=f"{KINDS[i % 5].replace('_', '-')}-{i}",
                    address=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:22",
                    labels=labels,
                    description=f"{labels['team']} {labels['env']} host {i}",
                )
            )
        created = Resource.objects.bulk_create(rows)
        if created[0].pk is None:  # backends that do not return ids
            created = list(Resource.objects.filter(name__in=[r.name for r in rows]))
        ResourceLabel.objects.bulk_create(
            [ResourceLabel(resource=r, key=k, value=v) for r in created for k, v in r.labels.items()]
        )


def setup_people() -> tuple[User, Resource]:
    engineers = Group.objects.create(name="engineers")
    leads = Group.objects.create(name="leads")
    user = User.objects.create_user("bench", password="x")
    user.groups.add(engineers)
    roles = [
        Role.objects.create(
            name="prod-ssh", resource_kinds=["node"], resource_labels={"env": ["prod"]}, logins=["ubuntu"]
        ),
        Role.objects.create(
            name="team-db", resource_kinds=["db"], resource_labels={"team": ["team1", "team2"]}, logins=["postgres"]
        ),
        Role.objects.create(
            name="apps", resource_kinds=["app", "kube_cluster"], resource_labels={"region": ["*"]}, logins=["admin"]
        ),
    ]
    for role in roles:
        role.requestable_by.add(engineers)
        role.reviewers.add(leads)
    role_scope_sync(roles=roles)  # the loader bulk-inserts, bypassing the service that keeps the scopes
    target = Resource.objects.filter(kind="node", labels__env="prod").order_by("pk")[100]
    now = timezone.now()
    access_request = AccessRequest.objects.create(
        requester=user, duration=timedelta(hours=1), state="approved", pending_expires_at=now + timedelta(hours=1)
    )
    access_request.roles.add(roles[0])
    # Twenty grants on other nodes plus one on the target: the check must not care how many.
    others = Resource.objects.filter(kind="node", labels__env="prod").exclude(pk=target.pk)[:20]
    Grant.objects.bulk_create(
        [
            Grant(
                request=access_request,
                user=user,
                role=roles[0],
                resource=r,
                starts_at=now,
                expires_at=now + timedelta(hours=1),
            )
            for r in [*others, target]
        ]
    )
    return user, target


def measure(client: APIClient, url: str, calls: int) -> tuple[float, float, int]:
    client.get(url)  # warm caches and connections
    times, queries = [], set()
    for _ in range(calls):
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content
        queries.add(len(ctx.captured_queries))
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    if len(queries) != 1:
        raise SystemExit(f"query count varies between calls of {url}: {sorted(queries)}")
    return statistics.median(times), p95, queries.pop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    setup_test_environment()
    rows = []
    for n in args.sizes:
        if connection.vendor == "sqlite":
            # A file, not shared memory: each size starts from an empty database.
            connection.settings_dict["TEST"]["NAME"] = str(Path(tempfile.mkdtemp()) / f"bench-{n}.sqlite3")
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
        try:
            started = time.perf_counter()
            load(n)
            user, target = setup_people()
            if connection.vendor == "postgresql":
                # What autovacuum does after a bulk load: statistics for the planner,
                # and a visibility map for index-only scans.
                with connection.cursor() as cursor:
                    cursor.execute("VACUUM ANALYZE")
            load_s = time.perf_counter() - started
            client = APIClient()
            client.force_authenticate(user)
            cases = {
                "search kind+label+text (page of 50)": (
                    "/api/v1/resources/?kind=node&label=env=prod&search=team1&page_size=50"
                ),
                "search kind+label (page of 50)": "/api/v1/resources/?kind=node&label=env=prod&page_size=50",
                "access check (allowed)": f"/api/v1/access-check/?resource={target.kind}/{target.name}&login=ubuntu",
                "access check (denied)": "/api/v1/access-check/?resource=node/node-5&login=ubuntu",
            }
            for label, url in cases.items():
                median, p95, queries = measure(client, url, args.calls)
                rows.append((n, label, median, p95, queries))
            print(f"loaded {n} resources in {load_s:.1f}s", file=sys.stderr)
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)

    print(f"\ndatabase: {connection.vendor}; {args.calls} calls per row; full DRF stack in-process\n")
    header = f"| {'N':>7} | {'call':<36} | {'median ms':>9} | {'p95 ms':>7} | {'queries':>7} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for n, label, median, p95, queries in rows:
        print(f"| {n:>7} | {label:<36} | {median:>9.2f} | {p95:>7.2f} | {queries:>7} |")
    # Sweep lag behind a delivery backlog needs real workers on Redis and PostgreSQL (bench/sweeps.py).
    if connection.vendor == "postgresql" and os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        subprocess.run([sys.executable, str(Path(__file__).with_name("sweeps.py"))], check=True)
    else:
        print("\nbench/sweeps.py skipped: it needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...")

    # Paths measured by their own modules, each on its own database and with its own floor.
    sys.stdout.flush()
    for module in ("access.py", "certs.py", "admin_queue.py"):
        subprocess.run([sys.executable, str(Path(__file__).with_name(module))], check=True)

    # The write paths have their own tables (bench/apply.py, bench/sweep.py).
    for path in ("apply", "sweep"):
        importlib.import_module(path).main(args.sizes)


if __name__ == "__main__":
    main()
    search_main([])
    # Lifecycles per second over HTTP: its own module, with its own server and defaults.
    subprocess.run([sys.executable, str(Path(__file__).with_name("lifecycle.py"))], check=True)
