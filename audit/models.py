"""The hash-chained, append-only audit log."""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.db import models


class AuditChainHead(models.Model):
    """A single row locked while an event is appended, so the chain stays a line.

    Its ``last_hash`` also makes deleting the newest event detectable.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_hash = models.CharField(max_length=64, blank=True)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        # The table this row was created in when the log lived in requests_app; kept so no row moves.
        db_table = "requests_app_auditchainhead"

    def __str__(self) -> str:
        return f"audit chain head after {self.count} events"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):  # history is not editable
        raise TypeError("audit events are append-only")

    def delete(self):
        raise TypeError("audit events are append-only")


class AuditEvent(models.Model):
    """One append-only entry of the audit log, chained to the previous by hash."""

    created_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Kept as text so the record survives the user and enters the hash.
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        db_table = "requests_app_auditevent"
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
            models.Index(fields=["action", "-id"], name="audit_action_idx"),
            models.Index(fields=["actor_username", "-id"], name="audit_actor_idx"),
            models.Index(fields=["created_at"], name="audit_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username or '-'} {self.action}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("audit events are append-only")

    def compute_hash(self) -> str:
        payload = json.dumps(
            {
                "prev": self.prev_hash,
                "at": self.created_at.isoformat(),
                "actor": self.actor_username,
                "action": self.action,
                "target_type": self.target_type,
                "target_id": self.target_id,
                "data": self.data,
            },
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()
