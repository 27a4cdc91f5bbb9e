"""The hash-chained, append-only audit log."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from requests_app.models import AuditChainHead, AuditEvent


def audit_record(
    *,
    action: str,
    actor=None,
    target: Any = None,
    target_type: str = "",
    target_id: str = "",
    data: dict | None = None,
) -> AuditEvent:
    """Append one event, chained to the newest one.

    Runs inside the caller's transaction (so the event commits or rolls back
    with the change it describes); the chain head row is locked so concurrent
    writers append one after another.
    """
    if target is not None:
        target_type = target_type or target._meta.model_name
        target_id = target_id or str(target.pk)
    # Normalise through JSON so the hash is computed over exactly what is stored.
    clean = json.loads(json.dumps(data or {}, default=str, sort_keys=True))
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
        event = AuditEvent(
            created_at=timezone.now(),
            actor=actor if actor is not None and actor.pk else None,
            actor_username=getattr(actor, "username", "") or "",
            action=action,
            target_type=target_type,
            target_id=target_id,
            data=clean,
            prev_hash=head.last_hash,
        )
        event.hash = event.compute_hash()
        event.save()
        head.last_hash = event.hash
        head.count += 1
        head.save(update_fields=["last_hash", "count"])
    return event


@dataclass
class ChainReport:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str = ""


def audit_verify(*, batch_size: int = 2000) -> ChainReport:
    """Walk the chain oldest first and report the first break."""
    prev_hash = ""
    checked = 0
    last_id = 0
    while True:
        batch = list(AuditEvent.objects.filter(id__gt=last_id).order_by("id")[:batch_size])
        if not batch:
            break
        for event in batch:
            if event.prev_hash != prev_hash:
                return ChainReport(False, checked, event.id, "does not link to the event before it (one was removed or altered)")
            if event.compute_hash() != event.hash:
                return ChainReport(False, checked, event.id, "its contents do not match its hash (it was altered)")
            prev_hash = event.hash
            checked += 1
            last_id = event.id
    head = AuditChainHead.objects.filter(id=1).first()
    head_hash = head.last_hash if head else ""
    head_count = head.count if head else 0
    if head_hash != prev_hash or head_count != checked:
        return ChainReport(
            False,
            checked,
            None,
            f"the chain ends at {prev_hash[:12] or 'nothing'} after {checked} events but the head records "
            f"{head_hash[:12] or 'nothing'} after {head_count} (newest events were removed)",
        )
    return ChainReport(True, checked)
