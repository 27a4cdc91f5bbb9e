"""``make run``: the links in notifications name the address the portal serves."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jitportal.devserver import served_url

REPO = Path(__file__).resolve().parents[2]
# Exactly what the Makefile runs before ``make run`` starts the devserver.
LOAD_ENV = re.search(r"^LOAD_ENV := (.+)$", (REPO / "Makefile").read_text(), re.M).group(1)
SERVED_BASE_URL = (
    "from jitportal.devserver import prepare_environment; "
    "prepare_environment(host={host!r}, port={port}); "
    "from django.conf import settings; print(settings.JITPORTAL_BASE_URL)"
)


def base_url_under_make_run(tmp_path, *, host="127.0.0.1", port=8000, exported=None, dot_env=None) -> str:
    """The base URL that web, worker and beat of ``make run HOST=.. PORT=..`` see (the repo's env files)."""
    (tmp_path / ".env.example").write_text((REPO / ".env.example").read_text())
    if dot_env is not None:
        (tmp_path / ".env").write_text(dot_env)
    env = {k: v for k, v in os.environ.items() if k not in ("JITPORTAL_BASE_URL", "DJANGO_SETTINGS_MODULE")}
    env["PYTHONPATH"] = str(REPO)
    if exported is not None:
        env["JITPORTAL_BASE_URL"] = exported
    script = f"{LOAD_ENV}; exec {sys.executable} -c {SERVED_BASE_URL.format(host=host, port=port)!r}".replace("$$", "$")
    result = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_make_run_with_another_port_links_to_that_port(tmp_path):
    assert base_url_under_make_run(tmp_path, port=8100) == "http://127.0.0.1:8100"
    assert base_url_under_make_run(tmp_path, host="localhost", port=8200) == "http://localhost:8200"


def test_a_base_url_the_user_set_wins_over_the_port(tmp_path):
    assert base_url_under_make_run(tmp_path, port=8100, exported="https://jit.example.com") == "https://jit.example.com"
    dot_env = "JITPORTAL_BASE_URL=https://tunnel.example.net\n"
    assert base_url_under_make_run(tmp_path, port=8100, dot_env=dot_env) == "https://tunnel.example.net"


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("0.0.0.0", 8100, "http://127.0.0.1:8100"),  # noqa: S104 - an input, nothing binds
        ("::", 8100, "http://[::1]:8100"),
        ("::1", 8100, "http://[::1]:8100"),
        ("portal.local", 9000, "http://portal.local:9000"),
    ],
)
def test_the_served_url_is_one_a_browser_on_this_machine_can_open(host, port, url):
    assert served_url(host, port) == url


def descendants(root: int) -> set[int]:
    """Every live process below ``root``, read from /proc (children, grandchildren, …)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may hold spaces and parentheses: the fields after the last ')' are fixed.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc; the kernel's parent-death signal is Linux's"
)
def test_a_supervisor_killed_with_sigkill_takes_web_worker_beat_and_their_pools_with_it(tmp_path):
    # Linux only, like the parent-death signal it proves (and /proc it reads).
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="jitportal.settings",
        DJANGO_DEBUG="1",
        JITPORTAL_DATA_DIR=str(tmp_path),  # its own SQLite file and filesystem broker
        JITPORTAL_BASE_URL="",
        PYTHONPATH=str(REPO),
    )
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "jitportal.devserver", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started: set[int] = set()
    try:
        # gunicorn's master and its 2 workers, the Celery worker and its pool of 2, and beat.
        deadline = time.monotonic() + 60
        while len(started) < 7 and time.monotonic() < deadline:
            assert supervisor.poll() is None, "the supervisor exited on its own"
            started = descendants(supervisor.pid)
            time.sleep(0.2)
        assert len(started) >= 7, f"only {len(started)} processes came up under the supervisor"

        supervisor.kill()
        supervisor.wait()

        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in started if alive(pid)] == []
    finally:
        supervisor.kill()
        supervisor.wait()
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
