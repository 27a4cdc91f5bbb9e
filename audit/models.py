"""The append-only audit log, sealed into a keyed MAC chain by one writer after commit."""

from __future__ import annotations

from django.conf import settings
from django.db import connections, models


class AuditChainHead(models.Model):
    """The newest sealed event's sequence number and MAC.

    Only the sealer writes it, and it takes this row's lock by writing it
    first, so two sealers queue instead of forking the chain. A head that
    disagrees with the newest sealed event shows that events were removed.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_seq = models.PositiveBigIntegerField(default=0)
    last_mac = models.CharField(max_length=64, blank=True)

    class Meta:
        # The table this row was created in when the log lived in requests_app; kept so no row moves.
        db_table = "requests_app_auditchainhead"

    def __str__(self) -> str:
        return f"audit chain head at seq {self.last_seq}"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):  # history is not editable
        raise TypeError("audit events are append-only")

    def delete(self):
        raise TypeError("audit events are append-only")

    def _seal_update(self, **kwargs) -> int:
        """The one write an event allows after its insert: giving it its place in the chain.

        Only ``audit_seal`` calls it (or ``_seal_rows``); the database trigger
        refuses any other update of a row.
        """
        return super().update(**kwargs)

    def _seal_rows(self, rows: list[tuple[int, str, str, int]]) -> int:
        """``_seal_update`` for a batch: ``(seq, prev_mac, mac, id)`` per event, one UPDATE for all.

        Each row is sealed only if still unsealed; returns how many were.
        The ORM would build a CASE per column over the whole batch, which
        cost more than the MACs.
        """
        connection = connections[self.db]
        table = connection.ops.quote_name(self.model._meta.db_table)
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # One statement for the batch: four arrays unnested into rows, instead of a round trip per event.
                seqs, prev_macs, macs, ids = (list(column) for column in zip(*rows, strict=True)) if rows else ([],) * 4
                cursor.execute(
                    f"UPDATE {table} e SET seq = v.seq, prev_mac = v.prev_mac, mac = v.mac "  # noqa: S608
                    "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[]) AS v(seq, prev_mac, mac, id) "
                    "WHERE e.id = v.id AND e.seq IS NULL",
                    [seqs, prev_macs, macs, ids],
                )
                return cursor.rowcount
            # The table name comes from the model; values are parameters.
            cursor.executemany(
                f"UPDATE {table} SET seq = %s, prev_mac = %s, mac = %s WHERE id = %s AND seq IS NULL",  # noqa: S608
                rows,
            )
            return cursor.rowcount

    def sealed(self) -> AuditEventQuerySet:
        return self.filter(seq__isnull=False)

    def unsealed(self) -> AuditEventQuerySet:
        return self.filter(seq__isnull=True)


class AuditEvent(models.Model):
    """One append-only entry of the audit log.

    It is inserted unsealed inside the transaction of the change it describes
    and sealed shortly after commit by ``audit_seal``: it then gets the next
    gapless ``seq``, the MAC of the event before it and its own MAC over every
    column, keyed by ``JITPORTAL_AUDIT_KEY``, which never enters the database.
    """

    created_at = models.DateTimeField()
    # No constraint and no cascade: deleting a user must not write to the log.
    # The id stays as recorded (and under the MAC); display uses actor_username.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)
    seq = models.PositiveBigIntegerField(null=True, blank=True, unique=True)
    prev_mac = models.CharField(max_length=64, blank=True)
    mac = models.CharField(max_length=64, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        db_table = "requests_app_auditevent"
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
            models.Index(fields=["action", "-id"], name="audit_action_idx"),
            models.Index(fields=["actor_username", "-id"], name="audit_actor_idx"),
            models.Index(fields=["created_at"], name="audit_created_idx"),
            # The sealer's "oldest unsealed first": without it each batch walks the primary key past
            # every sealed event, so sealing a backlog cost the square of its size.
            models.Index(fields=["id"], condition=models.Q(seq__isnull=True), name="audit_unsealed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username or '-'} {self.action}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("audit events are append-only")

    @property
    def sealed(self) -> bool:
        return self.seq is not None


class AuditCheckpoint(models.Model):
    """A signed checkpoint written to the file outside the database, and how verifying against it went.

    The signature and the line live in the file; this row is the portal's
    record of the newest result, shown by the API and the admin.
    """

    seq = models.PositiveBigIntegerField()
    mac = models.CharField(max_length=64, blank=True)
    count = models.PositiveBigIntegerField()
    at = models.DateTimeField()
    key = models.CharField(max_length=64)
    signature = models.CharField(max_length=128)
    written = models.BooleanField(default=True, help_text="false when nothing changed since the previous line")
    verified_at = models.DateTimeField()
    ok = models.BooleanField()
    problem = models.TextField(blank=True)
    first_bad_seq = models.PositiveBigIntegerField(null=True, blank=True)
    checked = models.PositiveBigIntegerField(default=0)
    checkpoints_checked = models.PositiveIntegerField(default=0)
    unsealed = models.PositiveBigIntegerField(default=0)
    oldest_unsealed_at = models.DateTimeField(null=True, blank=True)
    webhook_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"checkpoint at seq {self.seq} ({'ok' if self.ok else 'FAILED'})"
