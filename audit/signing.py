"""Ed25519 keys that sign audit checkpoints.

Every use of ``cryptography`` for the audit log lives in this module. The
private key comes from ``JITPORTAL_AUDIT_SIGNING_KEY`` and never enters the
database; an offline verifier needs only the public key
(``JITPORTAL_AUDIT_VERIFY_KEY``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings


def _raw(value: str, *, name: str) -> bytes:
    text = value.strip()
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{name} is not base64") from exc
    if len(raw) != 32:
        raise ValueError(f"{name} must be the base64 of 32 raw bytes, not {len(raw)}")
    return raw


def signing_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(
        _raw(settings.JITPORTAL_AUDIT_SIGNING_KEY, name="JITPORTAL_AUDIT_SIGNING_KEY")
    )


def public_bytes(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_key() -> ed25519.Ed25519PublicKey:
    configured = getattr(settings, "JITPORTAL_AUDIT_VERIFY_KEY", "")
    if configured:
        return ed25519.Ed25519PublicKey.from_public_bytes(_raw(configured, name="JITPORTAL_AUDIT_VERIFY_KEY"))
    return signing_key().public_key()


def fingerprint(key: ed25519.Ed25519PublicKey) -> str:
    """Names the key in each checkpoint line, so a line signed by another key reads as such."""
    return hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def sign(message: bytes) -> str:
    return base64.b64encode(signing_key().sign(message)).decode()


def signature_valid(key: ed25519.Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
