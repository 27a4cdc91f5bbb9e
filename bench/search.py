#!/usr/bin/env python
"""Resource search at scale: p50/p95 and SQL queries per call, beside floors measured in the same run.

Loads a realistic inventory (names like web-00012 over five kinds, labels env,
team and region, roles that overlap so some resources match many of them)
into a throwaway database and calls the real API in-process:

    python bench/search.py                          # SQLite: 10k and 100k
    DATABASE_URL=postgres://... python bench/search.py   # PostgreSQL: 10k, 100k and 1M
    python bench/search.py --sizes 10000 --calls 50
    DATABASE_URL=postgres://... python bench/search.py --sizes 1000000 --keep

Two floors are measured in the same run: the raw indexed SELECT of one page
by primary key, and a trivial authenticated API view (``/api/v1/me/``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
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

from accounts.models import Role, User  # noqa: E402
from accounts.scope import role_scope_sync  # noqa: E402
from accounts.selectors import resources_searchable_by  # noqa: E402
from inventory.models import Resource, ResourceLabel  # noqa: E402
from inventory.pagination import cursor_for  # noqa: E402

# Ten name prefixes, one kind each: at 1M resources each prefix holds 100k names, web-00000..web-99999.
PREFIXES = {
    "web": "node",
    "api": "node",
    "worker": "node",
    "cache": "node",
    "batch": "node",
    "pg": "db",
    "mysql": "db",
    "k8s": "kube_cluster",
    "app": "app",
    "win": "windows_desktop",
}
PORTS = {"node": 22, "db": 5432, "kube_cluster": 6443, "app": 443, "windows_desktop": 3389}
ENVS = ["prod", "staging", "dev"]
REGIONS = ["eu-west", "eu-central", "us-east", "ap-south"]
TEAMS = 50
ALL_KINDS = list(PORTS)
PAGE = 50
DEEP_PAGE = 2000


def resource_row(i: int) -> tuple[str, str, str, dict[str, str], str]:
    prefix = list(PREFIXES)[i % 10]
    kind = PREFIXES[prefix]
    env = ENVS[(i // 10) % 3]
    team = f"team{(i // 30) % TEAMS:02d}"
    region = REGIONS[(i // 1500) % 4]
    labels = {"env": env, "team": team, "region": region}
    if i % 7 == 0:
        labels["tier"] = "gold"
    address = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:{PORTS[kind]}"
    return kind, f"{prefix}-{i // 10:05d}", address, labels, f"{team} {env} {prefix} in {region}"


def load_postgresql(n: int) -> None:
    now = timezone.now()
    with connection.cursor() as cursor:
        # The GIN indexes (labels, trigrams) are built once after the load rather than row by row.
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'inventory_resource' AND indexdef LIKE %s",
            ["%USING gin%"],
        )
        gin = cursor.fetchall()
        for name, _ in gin:
            cursor.execute(f'DROP INDEX "{name}"')
        with cursor.copy(
            "COPY inventory_resource (id, kind, name, address, labels, description, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(n):
                kind, name, address, labels, description = resource_row(i)
                copy.write_row((i + 1, kind, name, address, json.dumps(labels), description, now, now))
        with cursor.copy("COPY inventory_resourcelabel (resource_id, key, value) FROM STDIN") as copy:
            for i in range(n):
                for key, value in resource_row(i)[3].items():
                    copy.write_row((i + 1, key, value))
        cursor.execute("SELECT setval(pg_get_serial_sequence('inventory_resource', 'id'), %s)", [n])
        for _, definition in gin:
            cursor.execute(definition)


def load_sqlite(n: int) -> None:
    now = timezone.now()
    batch = 20_000
    for start in range(0, n, batch):
        rows = [resource_row(i) for i in range(start, min(n, start + batch))]
        Resource.objects.bulk_create(
            [
                Resource(
                    id=start + k + 1,
                    kind=kind,
                    name=name,
                    address=address,
                    labels=labels,
                    description=description,
                    created_at=now,
                    updated_at=now,
                )
                for k, (kind, name, address, labels, description) in enumerate(rows)
            ]
        )
        ResourceLabel.objects.bulk_create(
            [
                ResourceLabel(resource_id=start + k + 1, key=key, value=value)
                for k, row in enumerate(rows)
                for key, value in row[3].items()
            ]
        )


def role(name: str, group: Group, kinds: list[str], labels: dict[str, list[str]]) -> Role:
    made = Role.objects.create(name=name, resource_kinds=kinds, resource_labels=labels, logins=["ops"])
    made.requestable_by.add(group)
    return made


def setup_people() -> tuple[User, User]:
    """A requester with five overlapping roles (about 60% of the inventory) and staff who may request everything."""
    engineers = Group.objects.create(name="engineers")
    operators = Group.objects.create(name="operators")
    requester = User.objects.create_user("alice", password="x")
    requester.groups.add(engineers)
    staff = User.objects.create_user("olga", password="x", is_staff=True)
    staff.groups.add(operators)
    role("prod-ssh", engineers, ["node"], {"env": ["prod"]})
    role("staging", engineers, ALL_KINDS, {"env": ["staging"]})
    role("team-db", engineers, ["db"], {"team": [f"team{t:02d}" for t in range(5)]})
    role("apps", engineers, ["app", "kube_cluster"], {"region": ["*"]})
    role("team07", engineers, ALL_KINDS, {"team": ["team07"]})
    role("everything", operators, ALL_KINDS, {})
    # Roles of other teams: rows in the scope table that no one measured here may search.
    for t in range(TEAMS):
        group = Group.objects.create(name=f"team{t:02d}")
        role(f"team{t:02d}-nodes", group, ["node"], {"team": [f"team{t:02d}"]})
    return requester, staff


def percentile(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def measure(call, calls: int) -> tuple[float, float, int]:
    call()  # warm caches and connections
    times, queries = [], set()
    for _ in range(calls):
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        queries.add(len(ctx.captured_queries))
    if len(queries) != 1:
        raise SystemExit(f"query count varies between calls: {sorted(queries)}")
    return statistics.median(times), percentile(times, 0.95), queries.pop()


def api_get(client: APIClient, url: str):
    def call():
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.content[:300]!r}")
        return response

    return call


def raw_page_by_pk(start: int):
    sql = (
        "SELECT id, kind, name, address, labels, description FROM inventory_resource WHERE id > %s ORDER BY id LIMIT %s"
    )

    def call():
        with connection.cursor() as cursor:
            cursor.execute(sql, [start, PAGE])
            return cursor.fetchall()

    return call


def deep_cursor(user: User) -> tuple[str, int]:
    """The cursor of page 2000 (or of the last page, for a smaller inventory) of the user's search."""
    scope = resources_searchable_by(user).order_by("kind", "name")
    total = scope.count()
    page = min(DEEP_PAGE, max(1, (total - 1) // PAGE))
    after = scope.values_list("kind", "name")[(page - 1) * PAGE - 1] if page > 1 else None
    return (cursor_for(after) if after else ""), page


def load(n: int) -> tuple[User, User]:
    started = time.perf_counter()
    if connection.vendor == "postgresql":
        load_postgresql(n)
    else:
        load_sqlite(n)
    requester, staff = setup_people()
    role_scope_sync(roles=list(Role.objects.all()))
    if connection.vendor == "postgresql":
        # What autovacuum does after a bulk load: statistics for the planner, a visibility map for index-only scans.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    else:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    print(f"loaded {n} resources and their role scopes in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return requester, staff


def loaded(n: int) -> tuple[User, User] | None:
    """The people of an inventory of ``n`` kept from an earlier run, or None when it is not all there."""
    people = {user.username: user for user in User.objects.filter(username__in=["alice", "olga"])}
    if len(people) == 2 and Resource.objects.count() == n and Role.objects.count() == 6 + TEAMS:
        return people["alice"], people["olga"]
    return None


def run_size(n: int, calls: int, *, kept: bool = False) -> dict[str, tuple]:
    people = loaded(n) if kept else None
    if people is None:
        if kept:
            # Whatever an interrupted load left: start from empty tables.
            connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0, keepdb=False)
            connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False, serialize=False)
        people = load(n)
    else:
        print(f"reusing the kept inventory of {n} resources", file=sys.stderr)
    requester, staff = people

    as_requester, as_staff = APIClient(), APIClient()
    as_requester.force_authenticate(requester)
    as_staff.force_authenticate(staff)
    cursor, page = deep_cursor(requester)
    base = "/api/v1/resources/"
    shapes = {
        "text only (search=web-00012), requester": api_get(as_requester, f"{base}?search=web-00012"),
        "kind+label+text, staff": api_get(as_staff, f"{base}?kind=node&label=env=prod&search=web-01"),
        "kind+label+text, requester": api_get(as_requester, f"{base}?kind=node&label=env=prod&search=web-01"),
        "no filter, requester": api_get(as_requester, base),
        f"page {DEEP_PAGE} by cursor, requester": api_get(as_requester, f"{base}?cursor={cursor}"),
        f"page {DEEP_PAGE} by number (legacy offset), requester": api_get(as_requester, f"{base}?page={page}"),
    }
    floors = {
        "raw SELECT of one page by pk": raw_page_by_pk(n // 2),
        "trivial authenticated view": api_get(as_requester, "/api/v1/me/"),
    }
    results = {}
    for label, call in {**floors, **shapes}.items():
        results[label] = measure(call, calls)
        print(f"  {n:>8} {label}: p50 {results[label][0]:.2f} ms, p95 {results[label][1]:.2f} ms", file=sys.stderr)
    return results


def report(by_size: dict[int, dict[str, tuple]], calls: int) -> None:
    out = io.StringIO()
    sizes = sorted(by_size)
    floors = ["raw SELECT of one page by pk", "trivial authenticated view"]
    print(
        f"\nresource search; database: {connection.vendor}; {calls} calls per row; full DRF stack in-process;"
        " floors measured in the same run\n",
        file=out,
    )
    shapes = [label for label in by_size[sizes[0]] if label not in floors]
    for label in shapes:
        print(f"### {label}\n", file=out)
        print("| N | p50 ms | p95 ms | queries | floor: raw page p50/p95 | floor: trivial view p50/p95 |", file=out)
        print("|---|---|---|---|---|---|", file=out)
        for n in sizes:
            median, p95, queries = by_size[n][label]
            raw, view = by_size[n][floors[0]], by_size[n][floors[1]]
            print(
                f"| {n:,} | {median:.2f} | {p95:.2f} | {queries} | {raw[0]:.2f} / {raw[1]:.2f}"
                f" | {view[0]:.2f} / {view[1]:.2f} |",
                file=out,
            )
        if len(sizes) > 1:
            first, last = by_size[sizes[0]][label][1], by_size[sizes[-1]][label][1]
            print(f"\ngrowth {sizes[0]:,} -> {sizes[-1]:,}: p95 x{last / first:.2f}\n", file=out)
        else:
            print(file=out)
    print(out.getvalue())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help="default: 10k 100k (SQLite), 10k 100k 1M (PostgreSQL)")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each size's database (<name>_search_<N>) after the run and reuse it in the next one;"
        " loading 1M resources takes minutes",
    )
    args = parser.parse_args(argv)
    sizes = args.sizes or ([10_000, 100_000, 1_000_000] if connection.vendor == "postgresql" else [10_000, 100_000])

    setup_test_environment()
    by_size = {}
    for n in sizes:
        if connection.vendor == "sqlite":
            # A file, not shared memory: each size starts from an empty database.
            folder = Path(tempfile.gettempdir()) / "jitportal-bench" if args.keep else Path(tempfile.mkdtemp())
            folder.mkdir(exist_ok=True)
            connection.settings_dict["TEST"]["NAME"] = str(folder / f"search-{n}.sqlite3")
        elif args.keep:
            connection.settings_dict["TEST"]["NAME"] = f"{connection.settings_dict['NAME']}_search_{n}"
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=args.keep, serialize=False)
        try:
            by_size[n] = run_size(n, args.calls, kept=args.keep)
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=args.keep)
    report(by_size, args.calls)


if __name__ == "__main__":
    main()
