"""What the HTTP benchmarks share: a throwaway database, gunicorn on it, and a load client.

The database is the test database of whatever DATABASE_URL names (a SQLite
file by default). gunicorn runs the production settings (``bench.settings``:
DEBUG off, two sync workers) on a free port in 8500-8599 (or the range in
``JITPORTAL_BENCH_PORTS``, e.g. ``8800-8899``, where several people share a machine); the load client
keeps ``concurrency`` keep-alive connections busy for ``seconds``, like
``wrk -c8``, and reports requests per second and latency.
"""

from __future__ import annotations

import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

# The in-process calls (query counts) see the same URLs as the server.
settings.ROOT_URLCONF = "bench.urls"

HOST = "127.0.0.1"


@contextmanager
def throwaway_database(name: str) -> Iterator[str]:
    """Create the benchmark's database; yields the DATABASE_URL a server process uses to reach it."""
    setup_test_environment()
    if connection.vendor == "sqlite":
        path = Path(tempfile.mkdtemp()) / f"{name}.sqlite3"
        connection.settings_dict["TEST"]["NAME"] = str(path)
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        db = connection.settings_dict
        if connection.vendor == "sqlite":
            url = f"sqlite:///{db['NAME']}"
        else:
            auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
            url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        yield url
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def analyze() -> None:
    """What autovacuum does after a bulk load: planner statistics."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def port_range(default: str) -> range:
    """The ports a benchmark's server may take: ``JITPORTAL_BENCH_PORTS`` (``first-last``) or ``default``."""
    first, _, last = os.environ.get("JITPORTAL_BENCH_PORTS", default).partition("-")
    return range(int(first), int(last) + 1)


def _free_port() -> int:
    ports = port_range("8500-8599")
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port in {ports.start}-{ports.stop - 1}")


@contextmanager
def gunicorn(database_url: str, *, workers: int = 2) -> Iterator[int]:
    """gunicorn with the production settings on the benchmark's database; yields its port."""
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "JITPORTAL_ENCRYPTION_KEYS": ",".join(settings.JITPORTAL_ENCRYPTION_KEYS),
        "DJANGO_ALLOWED_HOSTS": HOST,
        # TLS ends at the proxy in front; the benchmark talks to gunicorn directly.
        "DJANGO_SECURE_SSL_REDIRECT": "0",
    }
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "jitportal.wsgi:application",
            f"--bind={HOST}:{port}",
            f"--workers={workers}",
            "--worker-class=sync",
            "--log-level=warning",
            f"--chdir={ROOT}",
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("gunicorn did not start")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


@dataclass
class Load:
    rate: float  # requests per second
    p50_ms: float
    p95_ms: float


def load(
    port: int,
    method: str,
    path: str,
    *,
    token: str,
    body: Callable[[], bytes] | None = None,
    expect: int = 200,
    concurrency: int = 8,
    seconds: float = 5.0,
) -> Load:
    """Keep ``concurrency`` connections busy with one request for ``seconds``; every answer must be ``expect``."""
    headers = {"Authorization": f"Token {token}", "Host": HOST, "Content-Type": "application/json"}
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures: list[str] = []
    window: dict[str, float] = {}

    def open_window() -> None:
        # The clock starts once every client has had an answer: a worker's first request loads the
        # URLconf and the views, seconds on a loaded machine, and must not eat into the window.
        window["warm_until"] = time.monotonic() + 1.0
        window["stop_at"] = window["warm_until"] + seconds

    ready = threading.Barrier(concurrency, action=open_window)

    def client(mine: list[float]) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        conn.request(method, path, body=body() if body else None, headers=headers)
        first = conn.getresponse()
        content = first.read()
        if first.status != expect:
            failures.append(f"{first.status} {content[:200]!r}")
            ready.abort()
            return
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        warm_until, stop_at = window["warm_until"], window["stop_at"]
        while (now := time.monotonic()) < stop_at:
            started = time.perf_counter()
            conn.request(method, path, body=body() if body else None, headers=headers)
            response = conn.getresponse()
            content = response.read()
            if response.status != expect:
                failures.append(f"{response.status} {content[:200]!r}")
                return
            if now >= warm_until:
                mine.append(time.perf_counter() - started)
        conn.close()

    threads = [threading.Thread(target=client, args=(mine,)) for mine in latencies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{method} {path}: {failures[0]}")
    every = sorted(t for mine in latencies for t in mine)
    if not every:
        raise SystemExit(f"{method} {path}: no answer within {seconds:g}s")
    return Load(
        rate=len(every) / seconds,
        p50_ms=statistics.median(every) * 1000,
        p95_ms=every[min(len(every) - 1, int(len(every) * 0.95))] * 1000,
    )


def queries_per_call(method: str, path: str, *, token: str, data: dict | None = None, expect: int = 200) -> int:
    """The SQL statements one call runs, the same call made in-process with the same token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    call = getattr(client, method.lower())
    call(path, data, format="json") if data else call(path)
    with CaptureQueriesContext(connection) as ctx:
        response = call(path, data, format="json") if data else call(path)
    assert response.status_code == expect, response.content
    return sum(1 for q in ctx.captured_queries if not q["sql"].lstrip().startswith(("SAVEPOINT", "RELEASE")))


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [f"\n{title}\n", "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)
