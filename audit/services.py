"""The hash-chained, append-only audit log."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.models import AuditChainHead, AuditEvent


def _event(
    *,
    action: str,
    actor=None,
    target: Any = None,
    target_type: str = "",
    target_id: str = "",
    data: dict | None = None,
) -> AuditEvent:
    if target is not None:
        target_type = target_type or target._meta.model_name
        target_id = target_id or str(target.pk)
    # Normalise through JSON so the hash is computed over exactly what is stored.
    clean = json.loads(json.dumps(data or {}, default=str, sort_keys=True))
    return AuditEvent(
        actor=actor if actor is not None and actor.pk else None,
        actor_username=getattr(actor, "username", "") or "",
        action=action,
        target_type=target_type,
        target_id=target_id,
        data=clean,
    )


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
    return _append(
        [_event(action=action, actor=actor, target=target, target_type=target_type, target_id=target_id, data=data)]
    )[0]


def audit_record_many(entries: Iterable[dict], *, batch_size: int = 500) -> int:
    """Append many events in order under one lock of the chain head; returns how many.

    Each entry takes the keyword arguments of ``audit_record``. A sweep uses it
    so a batch of hundreds of transitions costs a few queries, not hundreds.
    """
    events = [_event(**entry) for entry in entries]
    return len(_append(events, batch_size=batch_size)) if events else 0


def _append(events: list[AuditEvent], *, batch_size: int = 500) -> list[AuditEvent]:
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
        # Timestamps are taken under the lock so they run in chain order.
        now = timezone.now()
        prev_hash = head.last_hash
        for event in events:
            event.created_at = now
            event.prev_hash = prev_hash
            event.hash = prev_hash = event.compute_hash()
        AuditEvent.objects.bulk_create(events, batch_size=batch_size)
        head.last_hash = prev_hash
        head.count += len(events)
        head.save(update_fields=["last_hash", "count"])
    return events


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
                return ChainReport(
                    False, checked, event.id, "does not link to the event before it (one was removed or altered)"
                )
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
