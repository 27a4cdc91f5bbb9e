#!/usr/bin/env python
"""``manage.py apply`` of a large inventory: first apply, no-change apply, one-change apply.

Generates a policy of N resources (mixed kinds, three or four labels each, block
YAML as people write it), then runs each apply in its own process against a
throwaway database (the test database of whatever DATABASE_URL names, SQLite by
default) so peak RSS is that of the apply alone. Beside each figure, floors
measured in the same run: parsing the same file with libyaml's C loader, and a
raw set-based insert of the same rows (COPY on PostgreSQL, executemany on
SQLite) with their label rows.

    python bench/apply.py                   # N = 10000 and 100000
    python bench/apply.py --sizes 20000
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
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import yaml  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

KINDS = ["node", "db", "kube_cluster", "app", "windows_desktop"]
PREFIX = {"node": "web", "db": "pg", "kube_cluster": "k8s", "app": "app", "windows_desktop": "win"}
ENVS = ["prod", "staging", "dev"]
TEAMS = [f"team-{name}" for name in ("core", "payments", "search", "data", "infra", "mobile", "edge", "ml")]
REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"]


def resource_rows(n: int, *, changed: int | None = None) -> list[tuple[str, str, str, dict, str]]:
    rows = []
    for i in range(n):
        kind = KINDS[i % 5]
        env, team, region = ENVS[i % 3], TEAMS[i % 8], REGIONS[i % 4]
        labels = {"env": env, "team": team, "region": region}
        if i % 7 == 0:
            labels["tier"] = "critical"
        description = f"{team} {env} {kind} in {region}" + (" (moved)" if i == changed else "")
        name = f"{PREFIX[kind]}-{env}-{i:07d}.{region}.example.internal"
        rows.append((kind, name, f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:22", labels, description))
    return rows


def write_policy(path: Path, n: int, *, changed: int | None = None) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("groups: [engineers]\nresources:\n")
        for kind, name, address, labels, description in resource_rows(n, changed=changed):
            out.write(f'  - kind: {kind}\n    name: {name}\n    address: "{address}"\n')
            out.write(f"    description: {description}\n    labels:\n")
            out.writelines(f"      {k}: {v}\n" for k, v in labels.items())


# --- children: one measured step each, in a fresh process ----------------------------------


def _child(step: str, db_name: str, file: str) -> dict:
    connection.settings_dict["NAME"] = db_name
    started = time.perf_counter()
    if step == "parse":
        with open(file, encoding="utf-8") as handle:
            yaml.load(handle, Loader=yaml.CSafeLoader)
    elif step == "events":
        # libyaml's events alone, built into nothing: what any loader of this file must pay.
        with open(file, encoding="utf-8") as handle:
            for _event in yaml.parse(handle, Loader=yaml.CSafeLoader):
                pass
    elif step == "raw":
        _raw_insert(file)
    else:
        call_command("apply", "-f", file, stdout=StringIO())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _raw_insert(file: str) -> None:
    n = int(Path(file).stem.split("-")[-1])
    now = timezone.now()
    rows = [(k, nm, a, json.dumps(lb), d, now, now) for k, nm, a, lb, d in resource_rows(n)]
    columns = "kind, name, address, labels, description, created_at, updated_at"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY inventory_resource ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            each = "jsonb_each_text(r.labels) j"
        else:
            insert = f"INSERT INTO inventory_resource ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s)"  # noqa: S608
            cursor.executemany(insert, rows)
            each = "json_each(r.labels) j"
        cursor.execute(
            "INSERT INTO inventory_resourcelabel (resource_id, key, value) "  # noqa: S608 - constant SQL
            f"SELECT r.id, j.key, j.value FROM inventory_resource r, {each}"
        )


def _run(step: str, file: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", step, str(connection.settings_dict["NAME"]), str(file)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _empty_inventory() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM inventory_resourcelabel")
        cursor.execute("DELETE FROM inventory_resource")


def bench(n: int, workdir: Path) -> list[tuple]:
    policy, changed = workdir / f"policy-{n}.yaml", workdir / f"changed-{n}.yaml"
    write_policy(policy, n)
    write_policy(changed, n, changed=n // 2)
    size_mib = policy.stat().st_size / 2**20
    parse = _run("parse", policy)
    events = _run("events", policy)
    raw = _run("raw", policy)
    _empty_inventory()
    first = _run("apply", policy)
    again = _run("apply", policy)
    one = _run("apply", changed)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM inventory_resource")
        assert cursor.fetchone()[0] == n
        cursor.execute("SELECT COUNT(*) FROM inventory_resourcelabel")
        assert cursor.fetchone()[0] == sum(len(r[3]) for r in resource_rows(n))
    floor_s = f"parse {parse['seconds']:.1f}s, raw insert {raw['seconds']:.1f}s"
    return [
        (n, f"{size_mib:.0f} MiB file", "first apply", first, floor_s),
        (
            n,
            "",
            "no-change apply",
            again,
            f"parse {parse['seconds']:.1f}s ({parse['rss_mib']:.0f} MiB), events {events['seconds']:.1f}s",
        ),
        (n, "", "one-change apply", one, f"parse {parse['seconds']:.1f}s"),
        (n, "", "raw insert (floor)", raw, ""),
        (n, "", "libyaml events (floor)", events, ""),
    ]


def main(sizes: list[int] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--child", nargs=3, metavar=("STEP", "DB", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args([] if sizes is not None else None)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return
    if sizes is None:  # run.py, calling with sizes, has set up the test environment already
        setup_test_environment()
    rows = []
    for n in sizes or args.sizes:
        workdir = Path(tempfile.mkdtemp())
        if connection.vendor == "sqlite":
            connection.settings_dict["TEST"]["NAME"] = str(workdir / f"bench-apply-{n}.sqlite3")
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
        try:
            rows += bench(n, workdir)
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)
    print(f"\ndatabase: {connection.vendor}; manage.py apply, each step in its own process\n")
    header = f"| {'N':>7} | {'policy':<12} | {'step':<22} | {'seconds':>7} | {'peak RSS MiB':>12} | {'floor':<48} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for n, size, step, m, floor in rows:
        print(f"| {n:>7} | {size:<12} | {step:<22} | {m['seconds']:>7.1f} | {m['rss_mib']:>12.0f} | {floor:<48} |")


if __name__ == "__main__":
    main()
