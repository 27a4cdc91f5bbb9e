"""Connecting with OpenSSH: an ephemeral key, a certificate for it, the system ``ssh``.

The key is made by ``ssh-keygen`` in a private temporary directory (0700, the
key file 0600) and deleted, with its certificate, when ``ssh`` exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jitcli.errors import CliError


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int | None


def parse_address(address: str, *, fallback_host: str) -> Endpoint:
    """``host``, ``host:port``, ``[v6]:port`` or empty (then the resource name is the host)."""
    address = (address or "").strip()
    if "://" in address:
        address = address.split("://", 1)[1].split("/", 1)[0]
    if not address:
        return Endpoint(fallback_host, None)
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""  # a bare IPv6 address or a plain host name
    if port and not (port.isascii() and port.isdigit()):
        raise CliError(f"the resource's address {address!r} has a port that is not a number")
    return Endpoint(host or fallback_host, int(port) if port else None)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CliError(f"{name} is not installed (it comes with the OpenSSH client)")
    return path


@dataclass(frozen=True)
class EphemeralKey:
    private_path: Path
    public_key: str

    @property
    def certificate_path(self) -> Path:
        return self.private_path.with_name(self.private_path.name + "-cert.pub")

    def save_certificate(self, certificate: str) -> None:
        fd = os.open(self.certificate_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(certificate.strip() + "\n")


@contextmanager
def ephemeral_key() -> Iterator[EphemeralKey]:
    keygen = _tool("ssh-keygen")
    directory = Path(tempfile.mkdtemp(prefix="jit-"))  # created 0700
    try:
        private = directory / "id_ed25519"
        # An argument list, no shell: nothing in it is interpreted.
        result = subprocess.run(  # noqa: S603
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "jit ephemeral key", "-f", str(private)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise CliError(f"ssh-keygen could not make a key: {detail[-1] if detail else result.returncode}")
        yield EphemeralKey(private, private.with_suffix(".pub").read_text().strip())
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def ssh_command(
    *,
    key: EphemeralKey,
    login: str,
    endpoint: Endpoint,
    port: int | None,
    options: list[str],
    extra: list[str],
    command: list[str],
) -> list[str]:
    argv = [
        _tool("ssh"),
        "-i",
        str(key.private_path),
        "-o",
        f"CertificateFile={key.certificate_path}",
        # Only this key: an agent's or the user's other keys are not offered to the host.
        "-o",
        "IdentitiesOnly=yes",
    ]
    chosen_port = port if port is not None else endpoint.port
    if chosen_port is not None:
        argv += ["-p", str(chosen_port)]
    for option in options:
        argv += ["-o", option]
    argv += extra
    # "--" before the destination: nothing after it (the remote command) is read as an ssh option.
    return [*argv, "--", f"{login}@{endpoint.host}", *command]


def run(argv: list[str], *, on_start: Callable[[], None] | None = None) -> int:
    """Run ssh in the foreground and return its exit status.

    While it runs, Ctrl-C belongs to ssh (and the remote command): this
    process only waits, then cleans up. A Python handler, unlike SIG_IGN, is
    not inherited by ssh.
    """
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        if on_start:
            on_start()
        try:
            return subprocess.call(argv)  # noqa: S603 - an argument list for ssh, no shell
        except OSError as exc:
            raise CliError(f"cannot run {argv[0]}: {exc.strerror}") from None
    finally:
        signal.signal(signal.SIGINT, previous)
