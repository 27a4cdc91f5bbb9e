"""``make run``: the web server, one Celery worker and beat together; Ctrl-C stops all three.

    python -m jitportal.devserver --host 127.0.0.1 --port 8000

Links in notifications point at the address served here (``--host`` and
``--port``) unless ``JITPORTAL_BASE_URL`` is set in the environment (or in
``.env``). The three share the terminal's output. If one of them exits on its own (a
port already in use, a broker that cannot be reached) the others are stopped
too, so nothing keeps running half-configured. Production runs these as
separate services instead (see README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

GRACE_SECONDS = 10
BASE_URL_VARIABLE = "JITPORTAL_BASE_URL"


def served_url(host: str, port: int) -> str:
    """The address a browser on this machine reaches the server at."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - recognises the wildcard, binds nothing
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def prepare_environment(*, host: str, port: int) -> None:
    """Before settings are read, and inherited by the web, the worker and beat.

    ``JITPORTAL_BASE_URL`` names the served address unless the user set it
    (``.env.example`` leaves it out so that ``make run PORT=...`` decides).
    """
    if not os.environ.get(BASE_URL_VARIABLE, "").strip():
        os.environ[BASE_URL_VARIABLE] = served_url(host, port)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jitportal.settings")


def commands(host: str, port: int) -> dict[str, list[str]]:
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "jitportal"]
    return {
        "web": [
            python,
            "-m",
            "gunicorn",
            "-c",
            "python:jitportal.gunicorn_config",
            "jitportal.wsgi:application",
            "--bind",
            f"{host}:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--access-logfile",
            "-",
        ],
        # Mingle and gossip talk to other workers; there are none, and on the
        # filesystem broker their broadcasts would pile up as files.
        "worker": [
            *celery,
            "worker",
            "--loglevel=INFO",
            "--concurrency=2",
            "--without-mingle",
            "--without-gossip",
            "--hostname=jitportal-dev@%h",
        ],
        "beat": [*celery, "beat", "--loglevel=INFO"],
    }


def describe_broker(url: str) -> str:
    if url.startswith("filesystem://"):
        return "the filesystem broker (no server needed)"
    parts = urlsplit(url)
    # Never print a password that may be in the URL.
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


# gunicorn stops at once on SIGINT (SIGTERM waits for open connections);
# Celery's worker finishes its current task on SIGTERM, beat just exits.
STOP_SIGNALS = {"web": signal.SIGINT, "worker": signal.SIGTERM, "beat": signal.SIGTERM}


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when this process dies.

    A supervisor killed with SIGKILL runs no cleanup, so only the kernel can
    stop its children then (a forgotten beat goes on scheduling sweeps beside a
    restarted one). The setting survives ``exec``; the children's own forks
    follow it too: Celery's pool processes set the same on themselves and
    gunicorn's workers exit when their master is gone. ``None`` off Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Loaded here, not in the forked child: between fork and exec only
    # async-signal-safe work belongs.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    supervisor = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The supervisor may have died between fork and prctl: then no signal
        # will ever come, and the child has been handed to another parent.
        if os.getppid() != supervisor:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _kill_group(process: subprocess.Popen) -> None:
    # Each child leads its own process group: this also reaches what it forked
    # (gunicorn's and Celery's pool processes), even if the leader is gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def stop(children: dict[str, subprocess.Popen]) -> None:
    for name, process in children.items():
        if process.poll() is None:
            process.send_signal(STOP_SIGNALS[name])
    deadline = time.monotonic() + GRACE_SECONDS
    for name, process in children.items():
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            print(f"  {name} did not stop in {GRACE_SECONDS}s; killing it", file=sys.stderr, flush=True)
        _kill_group(process)
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    prepare_environment(host=args.host, port=args.port)
    from django.conf import settings

    print(
        f"  Background: one Celery worker and beat on {describe_broker(settings.CELERY_BROKER_URL)}; "
        f"sweeps every {settings.JITPORTAL_SWEEP_INTERVAL_SECONDS}s. Ctrl-C stops everything.\n"
        f"  Links in notifications: {settings.JITPORTAL_BASE_URL}/\n",
        flush=True,
    )

    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    # The children run in their own process groups, so Ctrl-C (or a closed
    # terminal) reaches only this process, which stops them in order.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)

    children: dict[str, subprocess.Popen] = {}
    status = 0
    preexec = die_with_parent()
    try:
        for name, command in commands(args.host, args.port).items():
            # preexec_fn is safe here: this process starts no threads.
            children[name] = subprocess.Popen(command, process_group=0, preexec_fn=preexec)  # noqa: S603 - our own fixed commands
        while not stopping:
            exited = {name: p.returncode for name, p in children.items() if p.poll() is not None}
            if exited:
                name, code = next(iter(exited.items()))
                print(f"\n  {name} exited with code {code}; stopping the others.", file=sys.stderr, flush=True)
                status = 1
                break
            time.sleep(0.5)
    finally:
        print("\n  Stopping web, worker and beat…", file=sys.stderr, flush=True)
        stop(children)
    return status


if __name__ == "__main__":
    sys.exit(main())
