"""The MAC of a sealed event: pure functions shared by the sealer, the verifier and the upgrade migration."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any


def canonical(payload: dict[str, Any]) -> bytes:
    """One byte string per value: sorted keys, no spaces, so a MAC or signature is reproducible anywhere."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def event_payload(
    *,
    id: int,
    seq: int,
    created_at: datetime,
    actor_id: int | None,
    actor_username: str,
    action: str,
    target_type: str,
    target_id: str,
    data: Any,
    prev_mac: str,
) -> dict[str, Any]:
    return {
        "id": id,
        "seq": seq,
        "created_at": created_at.astimezone(UTC).isoformat(),
        "actor_id": actor_id,
        "actor_username": actor_username,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "data": data,
        "prev_mac": prev_mac,
    }


def event_mac(key: str, **columns: Any) -> str:
    """HMAC-SHA256 over every column of an event (see ``event_payload``), hex."""
    return hmac.new(key.encode(), canonical(event_payload(**columns)), hashlib.sha256).hexdigest()
