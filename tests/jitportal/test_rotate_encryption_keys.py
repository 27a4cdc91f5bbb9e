"""``manage.py rotate_encryption_keys``: every secret at rest moves to the first key, audited, or nothing moves."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from accounts.mfa import totp_begin
from accounts.models import TotpDevice
from audit.models import AuditEvent
from requests_app.credentials.ca import ssh_ca_init
from requests_app.models import NotificationChannel, SSHCertificateAuthority
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def stored(model, field: str, pk: int) -> str:
    """The token as it sits in the database, not decrypted by the field."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {field} FROM {model._meta.db_table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def decrypts_with(key: str, token: str) -> bool:
    try:
        Fernet(key.encode()).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def rotate() -> str:
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    return out.getvalue()


def test_every_encrypted_value_is_re_encrypted_with_the_first_key_and_audited():
    with override_settings(JITPORTAL_ENCRYPTION_KEYS=[OLD]):
        ca, _ = ssh_ca_init()
        hook = NotificationChannel.objects.create(
            name="room", kind=NotificationChannel.Kind.SLACK, url="https://hooks.example/T1", secret="s3cret", events=[]
        )
        email = NotificationChannel.objects.create(name="mail", kind=NotificationChannel.Kind.EMAIL, events=[])
        private_key = SSHCertificateAuthority.objects.get().private_key
        totp, _uri = totp_begin(user=make_user("alice"), verified_at=None)

    with override_settings(JITPORTAL_ENCRYPTION_KEYS=[NEW, OLD]):
        output = rotate()

    for model, field, pk in [
        (SSHCertificateAuthority, "private_key", ca.pk),
        (NotificationChannel, "url", hook.pk),
        (NotificationChannel, "secret", hook.pk),
        (TotpDevice, "secret", totp.pk),
    ]:
        token = stored(model, field, pk)
        assert decrypts_with(NEW, token) and not decrypts_with(OLD, token)
    assert stored(NotificationChannel, "url", email.pk) == ""  # an empty value stays empty
    with override_settings(JITPORTAL_ENCRYPTION_KEYS=[NEW]):  # the old key can go
        assert SSHCertificateAuthority.objects.get().private_key == private_key
        hook.refresh_from_db()
        assert (hook.url, hook.secret) == ("https://hooks.example/T1", "s3cret")
        assert TotpDevice.objects.get().secret == totp.secret
    event = AuditEvent.objects.get(action="encryption_keys.rotated")
    assert event.data["fields"] == {
        "accounts.TotpDevice.secret": 1,
        "requests_app.NotificationChannel.url": 1,
        "requests_app.NotificationChannel.secret": 1,
        "requests_app.SSHCertificateAuthority.private_key": 1,
    }
    assert event.data["total"] == 4
    assert "4 value(s) now use the first key" in output


def test_a_value_no_key_decrypts_fails_the_command_and_changes_nothing():
    with override_settings(JITPORTAL_ENCRYPTION_KEYS=[OLD]):
        ca, _ = ssh_ca_init()
        hook = NotificationChannel.objects.create(
            name="room", kind=NotificationChannel.Kind.SLACK, url="https://hooks.example/T1", events=[]
        )
    before = stored(NotificationChannel, "url", hook.pk)
    ca_before = stored(SSHCertificateAuthority, "private_key", ca.pk)

    with (
        override_settings(JITPORTAL_ENCRYPTION_KEYS=[NEW]),
        pytest.raises(CommandError, match="nothing was re-encrypted"),
    ):
        rotate()

    assert stored(NotificationChannel, "url", hook.pk) == before
    assert stored(SSHCertificateAuthority, "private_key", ca.pk) == ca_before
    assert not AuditEvent.objects.filter(action="encryption_keys.rotated").exists()
