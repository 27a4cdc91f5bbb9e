"""SSH keys: parsing users' public keys, CA key pairs and signing certificates.

Every use of ``cryptography`` for SSH lives in this module, so a reviewer
reads one file to see what the portal parses and signs.
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import ssh

from jitportal.crypto import decrypt
from jitportal.errors import DomainError
from requests_app.models import SSHCertificateAuthority

MIN_RSA_BITS = 3072
# OpenSSH's own ceiling for RSA moduli.
MAX_RSA_BITS = 16384
MAX_PUBLIC_KEY_LENGTH = 16384


# Key types we do not sign (ssh-dss, FIDO sk-… keys), told apart from text that is no key at all.
_KEY_TYPE = re.compile(r"(ssh|ecdsa|sk)-[A-Za-z0-9@._-]{1,60}")
_NOT_A_KEY = "is not an OpenSSH public key (expected a line like 'ssh-ed25519 AAAA… comment')"


# --- cryptography: keys, fingerprints, signatures --------------------------------------


def _fingerprint(key: ssh.SSHPublicKeyTypes) -> str:
    """``SHA256:…`` as ``ssh-keygen -l`` prints it."""
    digest = ssh.ssh_key_fingerprint(key, hashes.SHA256())
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _openssh_line(key: ssh.SSHPublicKeyTypes) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@dataclass(frozen=True)
class UserPublicKey:
    """A user's public key, checked: its one-line OpenSSH form (no comment) and fingerprint."""

    key: ssh.SSHCertPublicKeyTypes
    line: str
    fingerprint: str


def public_key_parse(text: object) -> UserPublicKey:
    """Parse an OpenSSH public key a certificate may be signed for.

    Accepts ed25519, ecdsa (P-256/384/521) and rsa of at least 3072 bits;
    anything else is a DomainError on ``public_key`` saying what was wrong.
    """

    def refuse(message: str) -> DomainError:
        return DomainError(message, field="public_key")

    if not isinstance(text, str) or not text.strip():
        raise refuse("send an OpenSSH public key, e.g. the contents of ~/.ssh/id_ed25519.pub")
    return _public_key_parse_line(text.strip())


# A person asks for certificates for the same key again and again; parsing it, its checks and its
# fingerprint cost about half what signing does. A refused key raises, and a raise is never kept.
@functools.lru_cache(maxsize=256)
def _public_key_parse_line(text: str) -> UserPublicKey:
    def refuse(message: str) -> DomainError:
        return DomainError(message, field="public_key")

    if len(text) > MAX_PUBLIC_KEY_LENGTH:
        raise refuse(f"is longer than {MAX_PUBLIC_KEY_LENGTH} characters; send one public key")
    if "PRIVATE KEY" in text:
        # Said loudly: the key was pasted somewhere it should not have been.
        raise refuse("this is a private key; send the public key (the .pub file) and keep the private key secret")
    if "\n" in text:
        raise refuse("send exactly one public key, on one line")
    try:
        identity = ssh.load_ssh_public_identity(text.encode())
    except UnsupportedAlgorithm:
        kind = text.split()[0]
        if _KEY_TYPE.fullmatch(kind):
            raise refuse(
                f"{kind} keys are not accepted; use ed25519, ecdsa or rsa (at least {MIN_RSA_BITS} bits)"
            ) from None
        raise refuse(_NOT_A_KEY) from None
    except ValueError:
        raise refuse(_NOT_A_KEY) from None
    if isinstance(identity, ssh.SSHCertificate):
        raise refuse("this is a certificate; send the public key it was made for")
    key = identity
    problem = _key_kind_problem(key)
    if problem is not None:
        raise refuse(problem)
    return UserPublicKey(key=key, line=_openssh_line(key), fingerprint=_fingerprint(key))


def _key_kind_problem(key: ssh.SSHPublicKeyTypes) -> str | None:
    """Why a parsed key's algorithm or size is not accepted, or None."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"rsa keys must have at least {MIN_RSA_BITS} bits; this one has {key.key_size}"
        if key.key_size > MAX_RSA_BITS:
            return f"rsa keys may have at most {MAX_RSA_BITS} bits; this one has {key.key_size}"
        return None
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        return f"{type(key).__name__} keys are not accepted; use ed25519, ecdsa or rsa"
    return None


@dataclass(frozen=True)
class _CAKeys:
    private_pem: str
    public_line: str
    fingerprint: str


def ca_keys_generate(name: str) -> _CAKeys:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = private.public_key()
    # The comment names the portal and the CA, so a host's TrustedUserCAKeys file says whose keys these are.
    return _CAKeys(pem, f"{_openssh_line(public)} jitportal-{name}", _fingerprint(public))


# Decrypted CA keys by (CA id, fingerprint, stored ciphertext): decrypting and parsing cost more than the
# signature itself. A rotation is a new row and re-encryption a new ciphertext, so either misses.
_ca_private_keys: dict[tuple[int, str, str], ssh.SSHPrivateKeyTypes] = {}
_CA_PRIVATE_KEYS_KEPT = 8


def _ca_private_key(ca: SSHCertificateAuthority) -> ssh.SSHPrivateKeyTypes:
    token = getattr(ca, "private_key_token", None)
    if token is None:  # a CA read whole (or just made): its key is already in hand
        return serialization.load_ssh_private_key(ca.private_key.encode(), password=None)
    cache_key = (ca.pk, ca.fingerprint, token)
    private = _ca_private_keys.get(cache_key)
    if private is None:
        private = serialization.load_ssh_private_key(decrypt(token).encode(), password=None)
        if len(_ca_private_keys) >= _CA_PRIVATE_KEYS_KEPT:
            _ca_private_keys.clear()
        _ca_private_keys[cache_key] = private
    return private


def certificate_sign(
    *,
    ca: SSHCertificateAuthority,
    subject: UserPublicKey,
    principals: list[str],
    key_id: str,
    serial: int,
    valid_after: int,
    valid_before: int,
    extensions: list[str],
) -> str:
    private = _ca_private_key(ca)
    builder = (
        ssh.SSHCertificateBuilder()
        .public_key(subject.key)
        .serial(serial)
        .type(ssh.SSHCertificateType.USER)
        .key_id(key_id.encode())
        .valid_principals([p.encode() for p in principals])
        .valid_after(valid_after)
        .valid_before(valid_before)
    )
    for name in extensions:
        builder = builder.add_extension(name.encode(), b"")
    return builder.sign(private).public_bytes().decode()
