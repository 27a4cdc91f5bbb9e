"""A real OpenSSH server per test, and a live portal the CLI can talk to.

``sshd`` runs as the current user (root in CI) on 127.0.0.1 on a free port,
with everything in a temporary directory: its host key, ``TrustedUserCAKeys``,
``AuthorizedPrincipalsFile`` (one file per login, ``%u``) and ``RevokedKeys``,
written from the portal's API. The login the tests use is the current user's
own name: sshd can only log a user in as a real local account, and as a
non-root user it can only log in that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH = shutil.which("ssh")
LOGIN = pwd.getpwuid(os.getuid()).pw_name


def require_openssh() -> None:
    """Skip where OpenSSH's server or client is missing; in CI (.ci/run installs them) fail instead."""
    missing = [name for name, path in (("sshd", SSHD), ("ssh", SSH)) if not path or not os.access(path, os.X_OK)]
    if not missing:
        return
    message = f"{' and '.join(missing)} not installed (apt-get install openssh-server openssh-client)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; .ci/run should have installed it")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    """One sshd standing in for one resource; its trust files are rewritten as the portal's answers change."""

    name: str
    directory: Path
    port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.directory / "sshd.log"
        (self.directory / "principals").mkdir(mode=0o755)
        for name in ("trusted_user_ca_keys", "revoked_keys"):
            (self.directory / name).write_text("")
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.directory / "ssh_host_ed25519_key")],
            check=True,
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_trusted_ca_keys(self, text: str) -> None:
        (self.directory / "trusted_user_ca_keys").write_text(text)

    def write_principals(self, login: str, text: str) -> None:
        (self.directory / "principals" / login).write_text(text)

    def write_revoked_keys(self, text: str) -> None:
        (self.directory / "revoked_keys").write_text(text)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _config(self) -> Path:
        d = self.directory
        config = d / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {d / 'ssh_host_ed25519_key'}",
                    f"PidFile {d / 'sshd.pid'}",
                    f"TrustedUserCAKeys {d / 'trusted_user_ca_keys'}",
                    f"AuthorizedPrincipalsFile {d / 'principals'}/%u",
                    f"RevokedKeys {d / 'revoked_keys'}",
                    # Certificates only: no authorized_keys, no passwords.
                    "AuthorizedKeysFile none",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "UsePAM no",
                    # The files live in a temporary directory that sshd's ownership checks would refuse.
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "LogLevel VERBOSE",
                    "LoginGraceTime 20",
                    "",
                ]
            )
        )
        return config

    def start(self) -> None:
        if os.geteuid() == 0:
            # sshd's privilege separation directory; Debian's service script creates it, we run sshd directly.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for _attempt in range(3):
            self.port = free_port()
            log = open(self.log_path, "a")  # noqa: SIM115 - sshd writes to it; closed once it started
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self._config())], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
            log.close()
            if self._wait_listening():
                return
            self.stop()
        raise RuntimeError(f"sshd did not start:\n{self.log()}")

    def _wait_listening(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def sshd_factory(tmp_path):
    """``start(name)`` gives a running sshd; every one is stopped after the test."""
    require_openssh()
    started: list[Sshd] = []

    def start(name: str) -> Sshd:
        directory = tmp_path / f"sshd-{name}"
        directory.mkdir()
        server = Sshd(name=name, directory=directory)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def ssh_run(
    server: Sshd, *, key: Path, certificate: Path | None, login: str = LOGIN, command: str = "echo ok"
) -> subprocess.CompletedProcess:
    """The system ssh client, non-interactive, offering only ``key`` (and its certificate)."""
    argv = [
        SSH,
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={server.directory / 'known_hosts'}",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=10",
        "-i",
        str(key),
        "-p",
        str(server.port),
    ]
    if certificate is not None:
        argv += ["-o", f"CertificateFile={certificate}"]
    argv += [f"{login}@127.0.0.1", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


# --- a live portal for the CLI ----------------------------------------------------------------


@pytest.fixture(scope="session")
def live_server(request):
    """pytest-django's live server, answering one request at a time.

    With SQLite in memory the server shares the test's one database
    connection; Django's threaded server would use it from several request
    threads at once (the CLI polling while a reviewer approves) and tangle
    their transactions. One at a time is how a small portal behaves anyway.
    """
    from django.core.servers.basehttp import WSGIServer
    from django.db import connections
    from django.test.testcases import LiveServerThread
    from pytest_django.live_server_helper import LiveServer

    class OneRequestAtATime(WSGIServer):
        def __init__(self, *args, connections_override=None, **kwargs):
            super().__init__(*args, **kwargs)

        def close_request(self, request):
            # As the threaded server does after each request (a no-op for a shared in-memory database).
            connections.close_all()
            super().close_request(request)

    with mock.patch.object(LiveServerThread, "server_class", OneRequestAtATime):
        server = LiveServer(os.environ.get("DJANGO_LIVE_TEST_SERVER_ADDRESS") or "localhost")
    yield server
    server.stop()
