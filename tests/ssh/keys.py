"""SSH keys and certificates for tests: made with ``cryptography``, read back with it and ssh-keygen."""

from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import ssh


def openssh_public(private) -> str:
    return (
        private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    )


def openssh_private(private) -> str:
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@cache
def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    # Cached: a 3072-bit key takes a while to generate.
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ecdsa_key(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve)


def dsa_public_line() -> str:
    """An ``ssh-dss`` line, built by hand: cryptography no longer writes DSA keys for SSH."""

    def sshstr(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    def mpint(value: int) -> bytes:
        return sshstr(value.to_bytes((value.bit_length() + 8) // 8, "big"))

    blob = sshstr(b"ssh-dss") + mpint(2**1023 + 1) + mpint(2**159 + 7) + mpint(2) + mpint(2**1000 + 3)
    return "ssh-dss " + base64.b64encode(blob).decode() + " old@laptop"


def parse_certificate(line: str) -> ssh.SSHCertificate:
    identity = ssh.load_ssh_public_identity(line.encode())
    assert isinstance(identity, ssh.SSHCertificate)
    return identity


def ssh_keygen_list(certificate: str, directory: Path) -> str:
    """``ssh-keygen -L`` of a certificate, times in UTC."""
    path = directory / "listed-cert.pub"
    path.write_text(certificate + "\n")
    result = subprocess.run(
        [shutil.which("ssh-keygen") or "ssh-keygen", "-L", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    )
    return result.stdout
