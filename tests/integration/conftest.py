"""Real Celery worker and beat processes against Redis and a database they share with the test.

The test process never opens that database itself: the database is a fresh
copy of a migrated template per test (a SQLite file in a temporary folder, or,
when ``DATABASE_URL`` names PostgreSQL, a separately created database), and
the test reads and writes it through ``driver.py``, a Django process of its
own. Redis is ``JITPORTAL_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/5``,
a database number nothing else here uses); each test run gets its own queue
and removes its keys afterwards, so runs in parallel never take each other's
tasks. Without a reachable Redis the tests skip, saying so, unless
``JITPORTAL_REQUIRE_INTEGRATION=1`` (CI) turns that into a failure.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dj_database_url
import pytest

from tests.integration.receiver import Receiver

BASE_DIR = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("JITPORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
QUEUE = f"jitportal-it-{RUN_ID}"


def _fail_or_skip(reason: str):
    if os.environ.get("JITPORTAL_REQUIRE_INTEGRATION") == "1":
        pytest.fail(f"{reason} (JITPORTAL_REQUIRE_INTEGRATION=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        _fail_or_skip(f"Redis at {REDIS_URL} is not reachable ({exc}); the Celery integration tests need it")
    yield client
    _forget_this_run(client)


def _forget_this_run(client) -> None:
    """Remove what this run left in Redis, and only that: other runs may share the database."""
    for key in client.scan_iter(match=f"*{QUEUE}*"):
        client.delete(key)
    # Workers' remote-control bindings, and messages a killed worker took but never acknowledged
    # (kombu would put them back on this run's queue an hour later).
    for member in client.smembers("_kombu.binding.celery.pidbox"):
        if RUN_ID.encode() in member:
            client.srem("_kombu.binding.celery.pidbox", member)
    for tag, message in client.hscan_iter("unacked"):
        if QUEUE.encode() in message:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)


class Databases:
    """A migrated template and cheap copies of it, on the engine the suite runs on."""

    def __init__(self, root: Path):
        self.root = root
        outer = os.environ.get("DATABASE_URL", "")
        self.postgres = outer.startswith(("postgres://", "postgresql://"))
        self.made: list[str] = []
        if self.postgres:
            self.server = dj_database_url.parse(outer)
            self.template = self._url(f"jitportal_it_{RUN_ID.replace('-', '_')}_tmpl")
            self._admin(f'CREATE DATABASE "{self._name(self.template)}"')
            self.made.append(self._name(self.template))
        else:
            self.template = f"sqlite:///{root / 'template.sqlite3'}"

    def _url(self, name: str) -> str:
        s = self.server
        auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
        return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{name}"

    @staticmethod
    def _name(url: str) -> str:
        return url.rsplit("/", 1)[1]

    def _admin(self, sql: str) -> None:
        import psycopg

        s = self.server
        with psycopg.connect(
            host=s["HOST"] or "127.0.0.1",
            port=s["PORT"] or 5432,
            user=s["USER"],
            password=s.get("PASSWORD") or None,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(sql)

    def copy(self, label: str) -> str:
        if self.postgres:
            url = self._url(f"jitportal_it_{RUN_ID.replace('-', '_')}_{label}")
            self._admin(f'CREATE DATABASE "{self._name(url)}" TEMPLATE "{self._name(self.template)}"')
            self.made.append(self._name(url))
            return url
        source = self.root / "template.sqlite3"
        target = self.root / f"{label}.sqlite3"
        shutil.copyfile(source, target)
        return f"sqlite:///{target}"

    def drop_all(self) -> None:
        for name in reversed(self.made):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def base_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_", "JITPORTAL_", "CACHE_URL"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "jitportal.settings",
            "DJANGO_SECRET_KEY": "integration-test-secret-key-0123456789-not-for-production",
            "JITPORTAL_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWZlcm5ldC1rZXktMDEyMzQ1Njc4OWE=",
            "JITPORTAL_AUDIT_KEY": "integration-test-audit-key",
            "JITPORTAL_AUDIT_SIGNING_KEY": "dGVzdC1vbmx5LWF1ZGl0LXNpZ25pbmcta2V5LTMyYgo=",
            "DJANGO_ALLOWED_HOSTS": "localhost",
            "DATABASE_URL": database_url,
            "JITPORTAL_DATA_DIR": str(data_dir),
            "CELERY_BROKER_URL": REDIS_URL,
            "JITPORTAL_CELERY_QUEUE": QUEUE,
            "JITPORTAL_BASE_URL": "http://portal.test",
            "JITPORTAL_SWEEP_INTERVAL_SECONDS": "1",
            "JITPORTAL_NOTIFICATION_BACKOFF_SECONDS": "1",
            "JITPORTAL_NOTIFICATION_BACKOFF_MAX_SECONDS": "2",
            "JITPORTAL_NOTIFICATION_TIMEOUT_SECONDS": "1",
            "JITPORTAL_NOTIFICATION_LEASE_SECONDS": "3",
            "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            "PYTHONPATH": str(BASE_DIR),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture(scope="session")
def databases(redis_client, tmp_path_factory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("integration-db"))
    try:
        env = base_env(dbs.template, tmp_path_factory.mktemp("integration-migrate"))
        result = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"], cwd=BASE_DIR, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
        yield dbs
    finally:
        if dbs.postgres:
            dbs.drop_all()


class Process:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} log ---\n" + "\n".join(self.output().splitlines()[-lines:])

    def wait_for_line(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}\n{self.tail()}")
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not print {text!r} in {timeout}s\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the whole group, pool processes included: nothing gets to clean up."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._log_file.close()


class Driver:
    """Talks to driver.py: ``driver.call("op", **args)`` returns the op's result."""

    def __init__(self, env: dict[str, str], log: Path):
        self._log = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.driver"],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )

    def call(self, op: str, **args):
        self.popen.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.popen.stdin.flush()
        line = self.popen.stdout.readline()
        if not line:
            raise AssertionError(f"the driver exited: {Path(self._log.name).read_text()}")
        reply = json.loads(line)
        if "error" in reply:
            raise AssertionError(f"driver op {op} failed:\n{reply['error']}")
        return reply["ok"]

    def close(self) -> None:
        self.popen.stdin.close()
        self.popen.wait(10)
        self._log.close()


class Portal:
    """One test's database, driver, and the worker and beat it starts."""

    def __init__(self, env: dict[str, str], root: Path):
        self.env = env
        self.root = root
        self.processes: list[Process] = []
        self.driver = Driver(env, root / "driver.log")

    def worker(self, name: str = "worker", *, queues: tuple[str, ...] = (), **extra_env: str) -> Process:
        """A worker on ``queues`` (``"sweeps"``, ``"deliveries"``; this run's prefix added), or on every queue."""
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "jitportal",
            "worker",
            "--loglevel=INFO",
            "--concurrency=2",
            "--without-mingle",
            "--without-gossip",
            f"--hostname={name}-{RUN_ID}@%h",
        ]
        if queues:
            command.append("--queues=" + ",".join(f"{QUEUE}-{q}" for q in queues))
        process = Process(name, command, {**self.env, **extra_env}, self.root / f"{name}.log")
        self.processes.append(process)
        process.wait_for_line(" ready.")
        return process

    def web(self, port: int, **extra_env: str) -> Process:
        """gunicorn serving the portal on ``port``, threads enough for a burst of concurrent requests."""
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "jitportal.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "16",
        ]
        env = {**self.env, "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "DJANGO_SECURE_SSL_REDIRECT": "0", **extra_env}
        process = Process("web", command, env, self.root / "web.log")
        self.processes.append(process)
        process.wait_for_line("Booting worker")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
            time.sleep(0.1)
        raise AssertionError(f"the web server did not listen on {port}\n{process.tail()}")

    def beat(self) -> Process:
        command = [sys.executable, "-m", "celery", "-A", "jitportal", "beat", "--loglevel=INFO"]
        process = Process("beat", command, self.env, self.root / "beat.log")
        self.processes.append(process)
        process.wait_for_line("beat: Starting...")
        return process

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.processes)

    def wait_until(self, predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")

    def close(self) -> None:
        for process in self.processes:
            process.stop()
        self.driver.close()


_test_numbers = itertools.count(1)


@pytest.fixture
def portal(databases, redis_client, tmp_path) -> Iterator[Portal]:
    # Leftover tasks from an earlier test in this run must not reach this one's database.
    for key in redis_client.scan_iter(match=f"*{QUEUE}*"):
        redis_client.delete(key)
    url = databases.copy(f"t{next(_test_numbers)}")
    env = base_env(url, tmp_path / "data")
    p = Portal(env, tmp_path)
    yield p
    p.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
