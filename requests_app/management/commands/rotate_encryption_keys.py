"""``manage.py rotate_encryption_keys``: re-encrypt every secret at rest with the newest key.

Rotating a key: put the new key first in ``JITPORTAL_ENCRYPTION_KEYS`` (the
old ones stay after it, so stored secrets still decrypt), run this, then drop
the old keys. One transaction, audited; a secret no key decrypts changes
nothing and fails the command.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from audit.services import audit_record
from jitportal.crypto import encrypted_fields_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted field (webhook URLs and secrets, SSH CA keys) with the first key of "
        "JITPORTAL_ENCRYPTION_KEYS, so older keys can then be removed."
    )

    def handle(self, *args, **options) -> None:
        try:
            with transaction.atomic():
                counts = encrypted_fields_rotate()
                audit_record(
                    action="encryption_keys.rotated",
                    target_type="encryption_keys",
                    data={"fields": counts, "total": sum(counts.values())},
                )
        except ImproperlyConfigured as exc:
            raise CommandError(f"{exc}; nothing was re-encrypted") from None
        for name, count in counts.items():
            self.stdout.write(f"{name}: {count} value(s) re-encrypted")
        self.stdout.write(
            f"{sum(counts.values())} value(s) now use the first key; older keys can be removed from "
            "JITPORTAL_ENCRYPTION_KEYS."
        )
