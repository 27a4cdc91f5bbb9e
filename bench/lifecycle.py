#!/usr/bin/env python
"""Full request lifecycles per second over HTTP, with 1 and 16 concurrent clients.

A lifecycle is: the requester creates a request, two reviewers approve it
(three POSTs with knox tokens). The bench starts gunicorn (several sync
workers, production settings) on a free port in 8100-8199 (or
``JITPORTAL_BENCH_PORTS``) against a throwaway
copy of the DATABASE_URL database (SQLite by default; PostgreSQL is the case
that matters), with a sealer sealing the audit log every second as beat
would. Beside each figure: the in-process floor, the same lifecycle through
the service functions serially in one process, and its queries.

    python bench/lifecycle.py                 # 1 and 16 clients
    python bench/lifecycle.py --clients 1 4 16 --lifecycles 20
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.contrib.auth.models import Group  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402

from accounts.models import ApiToken, Role, User  # noqa: E402
from audit.services import audit_seal  # noqa: E402
from inventory.services import resource_upsert  # noqa: E402
from requests_app.services import request_create, request_review  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    first, _, last = os.environ.get("JITPORTAL_BENCH_PORTS", "8100-8199").partition("-")
    for port in range(int(first), int(last) + 1):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise SystemExit(f"no free port in {first}-{last}")


def setup(clients: int) -> list[tuple[object, ...]]:
    """One requester and two reviewers per client, with their tokens; returns (users..., tokens...) per client."""
    engineers, _ = Group.objects.get_or_create(name="engineers")
    leads, _ = Group.objects.get_or_create(name="sre-leads")
    role = Role.objects.create(
        name="bench-ops", resource_kinds=["node"], resource_labels={"env": ["prod"]}, logins=["ubuntu"], approvals=2
    )
    role.requestable_by.set([engineers])
    role.reviewers.set([leads])
    resource_upsert(kind="node", name="bench-1", labels={"env": "prod"})
    people = []
    for i in range(clients):
        requester = User.objects.create_user(username=f"req{i}", password="x")
        first = User.objects.create_user(username=f"rev{i}a", password="x")
        second = User.objects.create_user(username=f"rev{i}b", password="x")
        requester.groups.add(engineers)
        first.groups.add(leads)
        second.groups.add(leads)
        tokens = [ApiToken.objects.create(user=u)[1] for u in (requester, first, second)]
        people.append((requester, first, second, *tokens))
    return people


def floor(people, count: int) -> tuple[float, float]:
    """Lifecycles per second and queries per lifecycle through the services, serially, in this process."""
    requester, first, second = people[0][:3]
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        for _ in range(count):
            made = request_create(requester=requester, resources=None, roles=[Role.objects.get()], reason="bench")
            request_review(request=made, reviewer=first, decision="approve")
            request_review(request=made, reviewer=second, decision="approve")
        elapsed = time.perf_counter() - started
    return count / elapsed, len(queries) / count


def post(conn: http.client.HTTPConnection, path: str, token: str, body: dict) -> dict:
    conn.request(
        "POST",
        path,
        body=json.dumps(body),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json", "Host": "127.0.0.1"},
    )
    response = conn.getresponse()
    data = response.read()
    if response.status not in (200, 201):
        raise RuntimeError(f"{path}: {response.status} {data[:300]!r}")
    return json.loads(data)


def over_http(port: int, people, clients: int, each: int) -> float:
    """Lifecycles per second with ``clients`` threads, each running ``each`` lifecycles."""
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def client(person) -> None:
        _, _, _, requester, first, second = person
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            barrier.wait()
            for _ in range(each):
                made = post(conn, "/api/v1/requests/", requester, {"roles": ["bench-ops"], "reason": "bench"})
                for reviewer in (first, second):
                    post(conn, f"/api/v1/requests/{made['id']}/reviews/", reviewer, {"decision": "approve"})
        except BaseException as exc:  # reported after the run
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(people[i],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"a client failed: {errors[0]}")
    return clients * each / elapsed


def sealer(stop: threading.Event) -> None:
    # What beat does every JITPORTAL_AUDIT_SEAL_SECONDS, here every second.
    while not stop.wait(1):
        audit_seal()
    connection.close()


def start_gunicorn(port: int, workers: int, database_url: str, data_dir: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "JITPORTAL_DATA_DIR": data_dir,
        # Notifications go to a throwaway filesystem broker no worker reads.
        "CELERY_BROKER_URL": "filesystem://localhost//",
    }
    env.pop("DJANGO_DEBUG", None)
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    process = subprocess.Popen(
        [gunicorn, "jitportal.wsgi", "-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
    )
    for _ in range(300):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.kill()
    raise SystemExit("gunicorn did not start")


def database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = settings["USER"]
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    return f"postgres://{user}{password}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--lifecycles", type=int, default=15, help="per client")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    args = parser.parse_args()

    setup_test_environment()
    data_dir = tempfile.mkdtemp()
    if connection.vendor == "sqlite":
        connection.settings_dict["TEST"]["NAME"] = str(Path(data_dir) / "lifecycle.sqlite3")
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    stop = threading.Event()
    process = None
    try:
        people = setup(max(args.clients))
        floor_rate, queries = floor(people, args.lifecycles * 2)
        port = free_port()
        process = start_gunicorn(port, args.workers, database_url(), data_dir)
        # Warm every worker up (imports, connections) before measuring.
        over_http(port, people, min(args.workers, max(args.clients)), 1)
        threading.Thread(target=sealer, args=(stop,), daemon=True).start()
        rows = [(clients, over_http(port, people, clients, args.lifecycles)) for clients in args.clients]
    finally:
        stop.set()
        if process is not None:
            process.terminate()
            process.wait(30)
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print(
        f"\ndatabase: {connection.vendor}; gunicorn {args.workers} sync workers; {args.lifecycles} lifecycles per "
        "client; lifecycle = create + 2 approvals over HTTP with knox tokens\n"
    )
    header = f"| {'clients':>7} | {'lifecycles/s':>12} | {'in-process floor/s':>18} | {'queries/lifecycle':>17} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for clients, rate in rows:
        print(f"| {clients:>7} | {rate:>12.1f} | {floor_rate:>18.1f} | {queries:>17.1f} |")


if __name__ == "__main__":
    main()
