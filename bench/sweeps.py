#!/usr/bin/env python
"""End-marking lag of the expiry sweep behind a delivery backlog, with real processes.

The scenario of the review: 2,000 grants ending over a minute while 5,700
messages are queued for one webhook that accepts connections and never
answers (so each delivery holds a worker process for the full timeout), with
the project's defaults (sweeps every 30 s, 10 s delivery timeout, worker
concurrency = CPUs). Real Celery worker(s) and beat on Redis, PostgreSQL.

Three runs, each on a fresh database and its own queues:

- ``floor``: this checkout, no hanging webhook and no backlog: the lag the
  sweep interval alone causes;
- ``before``: the code of ``--before-ref`` (default ``main``), one worker as
  it was deployed (one queue for everything);
- ``after``: this checkout, one worker per queue (``-Q sweeps``, ``-Q deliveries``).

Each run reports the largest ``ended_at - expires_at`` over the grants, and
how many were still not marked ended when it stopped (their wait so far
counts as their lag). The bound is two sweep intervals.

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://... python bench/sweeps.py
    python bench/sweeps.py --grants 200 --messages 500 --runs after
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 30  # the project default, JITPORTAL_SWEEP_INTERVAL_SECONDS
HANG_PORTS = range(8310, 8320)


# --- inside a checkout's Django (run as a child with that checkout on sys.path) -------------------


def _seed(grants: int, messages: int, hang_url: str, lead: float, spread: float) -> dict:
    """Data both the old and the new schema accept: one role, ``grants`` grants ending soon, queued messages."""
    from datetime import timedelta

    from django.contrib.auth.models import Group
    from django.utils import timezone

    from accounts.models import Role, User
    from requests_app.models import Grant, Notification, NotificationChannel
    from requests_app.notifications.outbox import enqueue_deliveries
    from requests_app.services import request_create, request_review

    engineers = Group.objects.create(name="engineers")
    leads = Group.objects.create(name="sre-leads")
    alice = User.objects.create(username="alice", email="alice@example.com")
    alice.groups.add(engineers)
    bob = User.objects.create(username="bob", email="bob@example.com")
    bob.groups.add(leads)
    role = Role.objects.create(name="prod-ops", resource_kinds=["node"], max_duration=timedelta(hours=8))
    role.requestable_by.add(engineers)
    role.reviewers.add(leads)
    if hang_url:
        events = ["request.created", "grant.ended", "grant.expiring"]
        NotificationChannel.objects.create(name="hangs", kind="webhook", url=hang_url, secret="k", events=events)
    req = request_create(requester=alice, roles=[role], reason="bench", duration="1h")
    request_review(request=req, reviewer=bob, decision="approve")
    now = timezone.now()
    first = now + timedelta(seconds=lead)
    Grant.objects.filter(request=req).update(starts_at=now - timedelta(hours=1), expires_at=first)
    Grant.objects.bulk_create(
        Grant(
            request=req,
            user=alice,
            role=role,
            starts_at=now - timedelta(hours=1),
            expires_at=first + timedelta(seconds=spread * i / grants),
            created_at=now,
        )
        for i in range(1, grants)
    )
    channel = NotificationChannel.objects.filter(name="hangs").first()
    queued = 0
    if channel is not None and messages:
        Notification.objects.bulk_create(
            Notification(
                channel=channel,
                event="request.created",
                subject_key=f"bench:{i}",
                payload={"n": i},
                next_attempt_at=now,
            )
            for i in range(messages)
        )
        pks = list(Notification.objects.filter(subject_key__startswith="bench:").values_list("pk", flat=True))
        queued = enqueue_deliveries(pks)
    last = Grant.objects.order_by("-expires_at").values_list("expires_at", flat=True).first()
    return {"queued": queued, "last_expiry": last.timestamp()}


def _measure() -> dict:
    from django.db.models import F, Max, Min
    from django.utils import timezone

    from requests_app.models import Grant

    now = timezone.now()
    ended = Grant.objects.filter(ended_at__isnull=False)
    waiting = Grant.objects.filter(ended_at__isnull=True, expires_at__lte=now)
    worst = ended.aggregate(lag=Max(F("ended_at") - F("expires_at")))["lag"]
    oldest = waiting.aggregate(oldest=Min("expires_at"))["oldest"]
    return {
        "grants": Grant.objects.count(),
        "ended": ended.count(),
        "due_not_ended": waiting.count(),
        "max_lag": worst.total_seconds() if worst is not None else 0.0,
        "oldest_wait": (now - oldest).total_seconds() if oldest is not None else 0.0,
    }


def child(role: str, args: list[str]) -> None:
    import django

    django.setup()
    if role == "seed":
        grants, messages, hang_url, lead, spread = args
        result = _seed(int(grants), int(messages), hang_url, float(lead), float(spread))
    else:
        result = _measure()
    print(json.dumps(result))


# --- the orchestration ----------------------------------------------------------------------------


class SilentServer:
    """Accepts every connection and never answers: the hanging webhook."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for port in HANG_PORTS:
            with contextlib.suppress(OSError):
                self.sock.bind(("127.0.0.1", port))
                break
        else:
            raise SystemExit(f"no free port in {HANG_PORTS} for the hanging webhook")
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def _admin(server_url: str, sql: str) -> None:
    import dj_database_url
    import psycopg

    s = dj_database_url.parse(server_url)
    with psycopg.connect(
        host=s["HOST"] or "127.0.0.1",
        port=s["PORT"] or 5432,
        user=s["USER"],
        password=s.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql)


def _database_url(server_url: str, name: str) -> str:
    return server_url.rsplit("/", 1)[0] + "/" + name


def _forget_queue(broker: str, prefix: str) -> None:
    """Remove this run's keys, and only them: others may share the Redis database."""
    import redis

    client = redis.Redis.from_url(broker)
    for key in client.scan_iter(match=f"*{prefix}*"):
        client.delete(key)
    for tag, message in client.hscan_iter("unacked"):
        if prefix.encode() in message:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    for member in client.smembers("_kombu.binding.celery.pidbox"):
        if prefix.encode() in member:
            client.srem("_kombu.binding.celery.pidbox", member)


def run(name: str, code: Path, *, layout: str, grants: int, messages: int, hang: bool, wait: float) -> dict:
    server_url = os.environ["DATABASE_URL"]
    db = f"bench_sweeps_{name}_{uuid.uuid4().hex[:6]}"
    prefix = f"bench-sweeps-{name}-{uuid.uuid4().hex[:6]}"
    data = Path(tempfile.mkdtemp(prefix=f"bench-sweeps-{name}-"))
    silent = SilentServer() if hang else None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "JITPORTAL_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "jitportal.settings",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-0123456789-not-for-production",
            "JITPORTAL_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWZlcm5ldC1rZXktMDEyMzQ1Njc4OWE=",
            "DJANGO_ALLOWED_HOSTS": "localhost",
            "DATABASE_URL": _database_url(server_url, db),
            "JITPORTAL_DATA_DIR": str(data),
            "JITPORTAL_CELERY_QUEUE": prefix,
            "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            "PYTHONPATH": str(code),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    py = sys.executable
    me = str(Path(__file__).resolve())
    processes: list[subprocess.Popen] = []
    _admin(server_url, f'CREATE DATABASE "{db}"')
    try:
        subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=code, env=env, check=True)
        celery = [py, "-m", "celery", "-A", "jitportal"]
        worker = [*celery, "worker", "--loglevel=WARNING", "--without-mingle", "--without-gossip"]
        if layout == "split":
            groups = [("sweeps", [f"--queues={prefix}-sweeps"]), ("deliveries", [f"--queues={prefix}-deliveries"])]
        else:
            groups = [("worker", [])]
        for label, extra in groups:
            log = (data / f"{label}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [*worker, f"--hostname={label}-{prefix}@%h", *extra],
                    cwd=code,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        beat_log = (data / "beat.log").open("wb")
        processes.append(
            subprocess.Popen(
                [*celery, "beat", "--loglevel=WARNING"],
                cwd=code,
                env=env,
                stdout=beat_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        # The workers and beat are running when the backlog and the expiries arrive, as in production.
        hang_url = f"http://127.0.0.1:{silent.port}/hook" if silent else ""
        seeded = subprocess.run(
            [py, me, "--child", "seed", str(grants), str(messages), hang_url, "40", "60"],
            cwd=code,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        seed = json.loads(seeded.stdout.splitlines()[-1])
        deadline = seed["last_expiry"] + wait
        while True:
            time.sleep(5)
            measured = subprocess.run(
                [py, me, "--child", "measure"], cwd=code, env=env, check=True, capture_output=True, text=True
            )
            state = json.loads(measured.stdout.splitlines()[-1])
            print(f"  {name}: {state}", file=sys.stderr)
            if state["ended"] == state["grants"] or time.time() > deadline:
                break
        return {"queued": seed["queued"], **state}
    finally:
        for p in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        if silent:
            silent.stop()
        _forget_queue(os.environ["CELERY_BROKER_URL"], prefix)
        _admin(server_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(data, ignore_errors=True)


def _checkout(ref: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix="bench-sweeps-code-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grants", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=5700)
    parser.add_argument("--wait", type=float, default=150, help="seconds to wait after the last grant ends")
    parser.add_argument("--before-ref", default="main", help="git ref of the code measured as 'before'")
    parser.add_argument("--runs", nargs="+", default=["floor", "before", "after"], choices=["floor", "before", "after"])
    args = parser.parse_args(argv)
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")) or not os.environ.get(
        "CELERY_BROKER_URL", ""
    ).startswith("redis://"):
        raise SystemExit("bench/sweeps.py needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...")

    results = {}
    for name in args.runs:
        if name == "floor":
            results[name] = run(name, ROOT, layout="split", grants=args.grants, messages=0, hang=False, wait=args.wait)
        elif name == "before":
            code = _checkout(args.before_ref)
            try:
                results[name] = run(
                    name, code, layout="one", grants=args.grants, messages=args.messages, hang=True, wait=args.wait
                )
            finally:
                shutil.rmtree(code, ignore_errors=True)
        else:
            results[name] = run(
                name, ROOT, layout="split", grants=args.grants, messages=args.messages, hang=True, wait=args.wait
            )

    floor = results.get("floor")
    print(
        f"\nend-marking lag: {args.grants} grants ending over 60 s, {args.messages} messages queued for a webhook"
        f" that never answers; sweeps every {INTERVAL} s; bound 2 intervals = {2 * INTERVAL} s"
        " (a machine shared with other work)\n"
    )
    header = (
        f"| {'run':<8} | {'workers':<28} | {'queued':>6} | {'max lag s':>9} | {'not ended':>9} |"
        f" {'floor s':>7} | {'within bound':<12} |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    layouts = {
        "floor": "-Q sweeps + -Q deliveries",
        "before": "one, one queue (before)",
        "after": "-Q sweeps + -Q deliveries",
    }
    for name, r in results.items():
        lag = max(r["max_lag"], r["oldest_wait"])
        shown = f"{lag:.1f}" if not r["due_not_ended"] else f">{lag:.0f}"
        ok = "yes" if lag < 2 * INTERVAL and not r["due_not_ended"] else "no"
        floor_s = f"{floor['max_lag']:.1f}" if floor else "-"
        print(
            f"| {name:<8} | {layouts[name]:<28} | {r['queued']:>6} | {shown:>9} |"
            f" {r['due_not_ended']:>9} | {floor_s:>7} | {ok:<12} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
    else:
        main()
