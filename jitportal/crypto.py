"""Encryption of secrets at rest (webhook URLs, signing secrets, CA keys).

Fernet keys come from ``JITPORTAL_ENCRYPTION_KEYS`` (comma-separated, newest
first): the first encrypts, all decrypt, so a key is rotated by putting a new
one in front and running ``manage.py rotate_encryption_keys``. In development
the key is derived from ``DJANGO_SECRET_KEY``.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import TextField, Value
from django.db.models.functions import Cast


@lru_cache(maxsize=4)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "JITPORTAL_ENCRYPTION_KEYS must hold Fernet keys (32 url-safe base64-encoded bytes); "
            "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        ) from exc


def fernet() -> MultiFernet:
    return _multifernet(tuple(settings.JITPORTAL_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "a stored secret cannot be decrypted with JITPORTAL_ENCRYPTION_KEYS (was a key removed?)"
        ) from exc


def rotate(token: str) -> str:
    """``token`` encrypted again with the first key; ImproperlyConfigured when no key decrypts it."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "a stored secret cannot be decrypted with JITPORTAL_ENCRYPTION_KEYS (was a key removed?)"
        ) from exc


class EncryptedTextField(models.TextField):
    """Text stored as a Fernet token; Python code only ever sees the plaintext."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)


def encrypted_fields_rotate() -> dict[str, int]:
    """Re-encrypt every stored ``EncryptedTextField`` value with the first key; counts per ``app.Model.field``.

    The caller holds the transaction: rows are locked while read, and one
    value no key decrypts (ImproperlyConfigured) rolls back every change.
    Stored tokens are read and written as they are (a cast, a plain value),
    so the plaintext never passes through the model.
    """
    counts: dict[str, int] = {}
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if not isinstance(field, EncryptedTextField):
                continue
            manager = model._base_manager
            stored = (
                manager.select_for_update()
                .exclude(**{field.name: ""})
                .exclude(**{f"{field.name}__isnull": True})
                .annotate(token=Cast(field.name, TextField()))
                .order_by("pk")
                .values_list("pk", "token")
            )
            done = 0
            for pk, token in stored:
                manager.filter(pk=pk).update(**{field.name: Value(rotate(token), output_field=TextField())})
                done += 1
            counts[f"{model._meta.label}.{field.name}"] = done
    return counts
