# Carries an existing SHA-256 chain into the keyed MAC chain without laundering it:
# the legacy chain is walked first and its result recorded in one sealed
# `audit.chain_upgraded` event appended after the carried-over events.

import hashlib
import json

from django.conf import settings
from django.db import migrations
from django.utils import timezone

from audit.chain import event_mac


def _legacy_hash(event) -> str:
    # AuditEvent.compute_hash as it was before the MAC chain.
    payload = json.dumps(
        {
            "prev": event.prev_hash,
            "at": event.created_at.isoformat(),
            "actor": event.actor_username,
            "action": event.action,
            "target_type": event.target_type,
            "target_id": event.target_id,
            "data": event.data,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _walk_legacy(Event, Head) -> dict:
    prev_hash, count, first_bad_id, problem = "", 0, None, ""
    for event in Event.objects.order_by("id").iterator(chunk_size=2000):
        if first_bad_id is None:
            if event.prev_hash != prev_hash:
                first_bad_id, problem = event.id, "does not link to the event before it"
            elif _legacy_hash(event) != event.hash:
                first_bad_id, problem = event.id, "its contents do not match its hash"
        prev_hash = event.hash
        count += 1
    head = Head.objects.filter(id=1).first()
    head_hash, head_count = (head.last_hash, head.count) if head else ("", 0)
    if first_bad_id is None and (head_hash, head_count) != (prev_hash, count):
        problem = f"the chain head records {head_count} events, the table holds {count}"
    return {
        "events": count,
        "ok": first_bad_id is None and not problem,
        "first_bad_id": first_bad_id,
        "problem": problem,
        "head_hash": head_hash,
    }


def _seal(Event, event, *, seq, prev_mac) -> str:
    mac = event_mac(
        settings.JITPORTAL_AUDIT_KEY,
        id=event.id,
        seq=seq,
        created_at=event.created_at,
        actor_id=event.actor_id,
        actor_username=event.actor_username,
        action=event.action,
        target_type=event.target_type,
        target_id=event.target_id,
        data=event.data,
        prev_mac=prev_mac,
    )
    # The historical model's plain manager: the append-only guards are the current model's.
    Event.objects.filter(pk=event.pk).update(seq=seq, prev_mac=prev_mac, mac=mac)
    return mac


def carry_over(apps, schema_editor):
    Event = apps.get_model("audit", "AuditEvent")
    Head = apps.get_model("audit", "AuditChainHead")
    head, _ = Head.objects.get_or_create(id=1)
    if not Event.objects.exists():
        return
    legacy = _walk_legacy(Event, Head)
    seq, prev_mac = 0, ""
    for event in Event.objects.order_by("id").iterator(chunk_size=2000):
        seq += 1
        prev_mac = _seal(Event, event, seq=seq, prev_mac=prev_mac)
    marker = Event.objects.create(
        created_at=timezone.now(),
        action="audit.chain_upgraded",
        target_type="auditevent",
        data=legacy,
        # The legacy column is still unique and required until 0004 drops it.
        hash=f"upgrade-{seq + 1}",
    )
    seq += 1
    prev_mac = _seal(Event, marker, seq=seq, prev_mac=prev_mac)
    Head.objects.filter(id=1).update(last_seq=seq, last_mac=prev_mac)


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0002_mac_chain_columns'),
    ]

    operations = [
        migrations.RunPython(carry_over, migrations.RunPython.noop),
    ]
