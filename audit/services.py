"""The append-only audit log: recording, sealing, checkpoints and verification.

Recording only inserts an unsealed row inside the caller's transaction: no
lock, no read of the chain head, so no write of the portal waits behind
another's transaction. ``audit_seal`` (beat, every
``JITPORTAL_AUDIT_SEAL_SECONDS``) is the single writer that gives committed
rows their gapless ``seq`` and keyed MAC. The unsealed window is therefore the
seal interval plus worker lag; ``audit_verify`` reports it (count and oldest)
and fails when a row stays unsealed past ``JITPORTAL_AUDIT_UNSEALED_MAX_SECONDS``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Min
from django.utils import timezone

from audit import signing
from audit.chain import canonical, event_mac
from audit.models import AuditChainHead, AuditCheckpoint, AuditEvent
from jitportal.db import insert_rows

logger = logging.getLogger(__name__)


def _columns(
    *,
    action: str,
    actor=None,
    target: Any = None,
    target_type: str = "",
    target_id: str = "",
    data: dict | None = None,
) -> dict[str, Any]:
    """The stored values of one event from ``audit_record``'s arguments, the same for one event or many.

    ``data`` is its JSON text (keys sorted, anything else as its str()), so the
    MAC is computed over exactly what is stored.
    """
    if target is not None:
        target_type = target_type or target._meta.model_name
        target_id = target_id or str(target.pk)
    return {
        "actor_id": actor.pk if actor is not None and actor.pk else None,
        "actor_username": getattr(actor, "username", "") or "",
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "data": json.dumps(data or {}, default=str, sort_keys=True),
    }


def audit_record(
    *,
    action: str,
    actor=None,
    target: Any = None,
    target_type: str = "",
    target_id: str = "",
    data: dict | None = None,
) -> AuditEvent:
    """Insert one unsealed event in the caller's transaction.

    It commits or rolls back with the change it describes; ``audit_seal``
    puts it into the chain after commit.
    """
    columns = _columns(
        action=action, actor=actor, target=target, target_type=target_type, target_id=target_id, data=data
    )
    event = AuditEvent(created_at=timezone.now(), **{**columns, "data": json.loads(columns["data"])})
    event.save()
    return event


# Columns an insert fills; the seal columns (prev_mac, mac) start empty and only ``audit_seal`` writes them.
AUDIT_INSERT_COLUMNS = _INSERT_COLUMNS = (
    "created_at",
    "actor_id",
    "actor_username",
    "action",
    "target_type",
    "target_id",
    "data",
    "prev_mac",
    "mac",
)


def audit_record_many(entries: Iterable[dict], *, batch_size: int = 1000) -> int:
    """Insert many unsealed events with one multi-row INSERT per batch; returns how many.

    Each entry takes the keyword arguments of ``audit_record``. Sweeps use it
    for thousands of transitions, so rows go to the database as plain tuples
    (no model instances, no ids read back); they share one ``created_at``,
    the time of the transaction that writes them.
    """
    created_at = timezone.now()
    rows = [audit_row(**entry, created_at=created_at) for entry in entries]
    insert_rows(table=AuditEvent._meta.db_table, columns=_INSERT_COLUMNS, rows=rows, batch_size=batch_size)
    return len(rows)


def audit_row(*, created_at: datetime, **entry: Any) -> tuple:
    """One unsealed event as stored, in the order of ``AUDIT_INSERT_COLUMNS``, for a caller's own INSERT.

    ``entry`` takes the keyword arguments of ``audit_record``. For a write that
    inserts its event in the same statement as the change it describes (one
    round trip, one transaction), values already in database form.
    """
    columns = {
        **_columns(**entry),
        "created_at": connection.ops.adapt_datetimefield_value(created_at),
        "prev_mac": "",
        "mac": "",
    }
    return tuple(columns[name] for name in _INSERT_COLUMNS)


# --- sealing ------------------------------------------------------------------------------


# What the sealer reads of an event: every column under its MAC but the seal itself.
_MAC_COLUMNS = ("id", "created_at", "actor_id", "actor_username", "action", "target_type", "target_id", "data")


def _mac_of(columns: dict, *, seq: int, prev_mac: str) -> str:
    return event_mac(str(settings.JITPORTAL_AUDIT_KEY), **columns, seq=seq, prev_mac=prev_mac)


def _mac(event: AuditEvent, *, seq: int, prev_mac: str) -> str:
    return _mac_of({name: getattr(event, name) for name in _MAC_COLUMNS}, seq=seq, prev_mac=prev_mac)


def _seal_batch(batch_size: int) -> int:
    with transaction.atomic():
        # Writing the head takes its lock first (a row lock on PostgreSQL, the
        # database's write lock on SQLite), so a second sealer waits here and
        # then reads the head this one leaves.
        if not AuditChainHead.objects.filter(id=1).update(last_seq=F("last_seq")):
            # No head yet (an emptied database): create it, then lock it like any other run.
            AuditChainHead.objects.get_or_create(id=1)
            AuditChainHead.objects.filter(id=1).update(last_seq=F("last_seq"))
        head = AuditChainHead.objects.get(id=1)
        # Plain values, not model instances: the sealer reads thousands of events a run.
        batch = list(AuditEvent.objects.unsealed().order_by("id").values(*_MAC_COLUMNS)[:batch_size])
        if not batch:
            return 0
        seq, prev_mac = head.last_seq, head.last_mac
        sealed: list[tuple[int, str, str, int]] = []
        for columns in batch:
            seq += 1
            mac = _mac_of(columns, seq=seq, prev_mac=prev_mac)
            sealed.append((seq, prev_mac, mac, columns["id"]))
            prev_mac = mac
        # The head's lock keeps every other sealer out, so each row read here is still unsealed;
        # if one were not, writing the head would leave a gap in the chain.
        if AuditEvent.objects.unsealed()._seal_rows(sealed) != len(sealed):
            raise RuntimeError("an event was sealed by another writer while the chain head was locked")
        AuditChainHead.objects.filter(id=1).update(last_seq=seq, last_mac=prev_mac)
        return len(batch)


def audit_seal(*, batch_size: int = 1000) -> int:
    """Seal every committed unsealed event into the chain, oldest id first; returns how many.

    The one writer of ``seq``, ``prev_mac``, ``mac`` and the chain head. Each
    batch is its own short transaction, so the head's lock is held for one
    batch, never for a caller's transaction. Ids may have committed out of
    order; ``seq`` is the chain's order.
    """
    total = 0
    while count := _seal_batch(batch_size):
        total += count
    return total


# --- verification -------------------------------------------------------------------------


@dataclass
class AuditReport:
    ok: bool
    checked: int
    problem: str = ""
    first_bad_seq: int | None = None
    first_bad_id: int | None = None
    unsealed: int = 0
    oldest_unsealed_at: datetime | None = None
    checkpoints_checked: int = 0
    bad_line: int | None = None


@dataclass
class _Checkpoint:
    line: int
    seq: int
    mac: str


class _Broken(Exception):
    def __init__(
        self,
        problem: str,
        *,
        seq: int | None = None,
        id: int | None = None,
        line: int | None = None,
        checked: int | None = None,
    ):
        super().__init__(problem)
        self.problem, self.seq, self.id, self.line, self.checked = problem, seq, id, line, checked


def _walk_chain(batch_size: int) -> tuple[int, str]:
    """Check every sealed event by seq; returns (last seq, last mac) or raises ``_Broken``."""
    last_seq, prev_mac = 0, ""
    while True:
        batch = list(AuditEvent.objects.sealed().filter(seq__gt=last_seq).order_by("seq")[:batch_size])
        if not batch:
            break
        for event in batch:
            expected = last_seq + 1
            if event.seq != expected:
                raise _Broken(
                    f"seq {expected} is missing (the next sealed event is seq {event.seq}, id {event.pk}): "
                    "an event was deleted or renumbered",
                    seq=expected,
                    id=event.pk,
                    checked=last_seq,
                )
            if event.mac != _mac(event, seq=event.seq, prev_mac=event.prev_mac):
                raise _Broken(
                    f"event seq {event.seq} (id {event.pk}) does not match its MAC: a column was altered "
                    "or the event was forged",
                    seq=event.seq,
                    id=event.pk,
                    checked=last_seq,
                )
            if event.prev_mac != prev_mac:
                raise _Broken(
                    f"event seq {event.seq} (id {event.pk}) does not link to seq {last_seq}: "
                    "the chain was reordered or rewritten",
                    seq=event.seq,
                    id=event.pk,
                    checked=last_seq,
                )
            last_seq, prev_mac = event.seq, event.mac
    head = AuditChainHead.objects.filter(id=1).first()
    head_seq, head_mac = (head.last_seq, head.last_mac) if head else (0, "")
    if (head_seq, head_mac) != (last_seq, prev_mac):
        raise _Broken(
            f"the chain ends at seq {last_seq} but its head records seq {head_seq}"
            + (": the newest events were deleted" if head_seq > last_seq else ": the head was altered"),
            seq=last_seq + 1 if head_seq > last_seq else head_seq,
            checked=last_seq,
        )
    return last_seq, prev_mac


def _read_checkpoints(path: Path) -> Iterator[_Checkpoint]:
    """Each line of the file, its signature checked against the verify key; raises ``_Broken`` at the first bad one."""
    key = signing.verify_key()
    expected_key = signing.fingerprint(key)
    previous = 0
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                entry = json.loads(text)
                signature = entry.pop("sig")
                seq, mac = int(entry["seq"]), str(entry["mac"])
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise _Broken(f"checkpoint line {number} is not a checkpoint", line=number) from exc
            if entry.get("key") != expected_key:
                raise _Broken(
                    f"checkpoint line {number} is signed by another key ({entry.get('key')!s}, "
                    f"expected {expected_key})",
                    line=number,
                )
            if not signing.signature_valid(key, canonical(entry), str(signature)):
                raise _Broken(f"checkpoint line {number}: its signature does not verify", line=number)
            if seq < previous:
                raise _Broken(f"checkpoint line {number} goes back from seq {previous} to {seq}", line=number)
            previous = seq
            yield _Checkpoint(number, seq, mac)


def _check_checkpoints(path: Path, *, last_seq: int, batch_size: int) -> int:
    """Every checkpointed seq must still hold the MAC it was signed with; returns how many lines were checked."""
    checked = 0
    pending: list[_Checkpoint] = []

    def flush() -> None:
        wanted = {c.seq for c in pending if c.seq}
        found = dict(AuditEvent.objects.filter(seq__in=wanted).values_list("seq", "mac"))
        for c in pending:
            if not c.seq:
                continue
            if c.seq not in found:
                raise _Broken(
                    f"checkpoint line {c.line} records seq {c.seq} but the log ends at seq {last_seq}: "
                    "events were deleted, truncated or wiped",
                    seq=last_seq + 1,
                    line=c.line,
                )
            if found[c.seq] != c.mac:
                raise _Broken(
                    f"event seq {c.seq} no longer has the MAC checkpoint line {c.line} signed: the log was rewritten",
                    seq=c.seq,
                    line=c.line,
                )
        pending.clear()

    for checkpoint in _read_checkpoints(path):
        pending.append(checkpoint)
        checked += 1
        if len(pending) >= batch_size:
            flush()
    flush()
    return checked


def audit_verify(*, checkpoints: str | Path | None = None, batch_size: int = 2000) -> AuditReport:
    """Walk the sealed events by seq (memory bounded) and, given a checkpoint file, check it against them.

    Fails at the first event whose seq leaves a gap, whose MAC does not match
    its columns or which does not link to the one before; when the head
    disagrees with the newest event; at a checkpoint line whose signature does
    not verify or whose seq and MAC the log no longer holds. Unsealed events
    are counted; they fail the check only once older than
    ``JITPORTAL_AUDIT_UNSEALED_MAX_SECONDS`` (the sealer has stopped).
    """
    unsealed = AuditEvent.objects.unsealed().aggregate(oldest=Min("created_at"), first=Min("id"))
    unsealed_count = AuditEvent.objects.unsealed().count() if unsealed["first"] is not None else 0
    report = AuditReport(ok=True, checked=0, unsealed=unsealed_count, oldest_unsealed_at=unsealed["oldest"])
    try:
        last_seq, _ = _walk_chain(batch_size)
        report.checked = last_seq
        if checkpoints is not None:
            report.checkpoints_checked = _check_checkpoints(Path(checkpoints), last_seq=last_seq, batch_size=batch_size)
    except _Broken as broken:
        report.ok, report.problem = False, broken.problem
        if broken.checked is not None:
            report.checked = broken.checked
        report.first_bad_seq, report.first_bad_id, report.bad_line = broken.seq, broken.id, broken.line
        return report
    except OSError as exc:
        report.ok, report.problem = False, f"cannot read the checkpoint file: {exc.strerror or exc}"
        return report
    bound = timedelta(seconds=settings.JITPORTAL_AUDIT_UNSEALED_MAX_SECONDS)
    if report.oldest_unsealed_at is not None and report.oldest_unsealed_at < timezone.now() - bound:
        report.ok = False
        report.first_bad_id = unsealed["first"]
        report.problem = (
            f"{unsealed_count} events are unsealed, the oldest since {report.oldest_unsealed_at.isoformat()}: "
            "the sealer is not running"
        )
    return report


# --- checkpoints --------------------------------------------------------------------------


def _last_line(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 4096))
            tail = file.read().splitlines()
    except FileNotFoundError:
        return None
    for text in reversed(tail):
        if text.strip():
            try:
                return json.loads(text)
            except ValueError:
                return None
    return None


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _post_webhook(url: str, line: str) -> str:
    """POST the checkpoint line; returns the error, or '' when delivered. A failure is recorded, never raised."""
    if not url.startswith(("https://", "http://")):
        return "the webhook URL must be http(s)"
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=line.encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.JITPORTAL_AUDIT_CHECKPOINT_WEBHOOK_TIMEOUT):  # noqa: S310
            return ""
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))[:500]


def audit_checkpoint(*, path: str | Path | None = None, now: datetime | None = None) -> AuditCheckpoint:
    """Seal, sign the head and append it to the checkpoint file, then verify the log against the whole file.

    A line is written only when the head moved since the file's last line: a
    quiet log adds no lines, and the last line still covers every event.
    The result is stored as an ``AuditCheckpoint`` for the API and the admin.
    """
    target = Path(path or str(settings.JITPORTAL_AUDIT_CHECKPOINT_FILE))
    now = now or timezone.now()
    audit_seal()
    head, _ = AuditChainHead.objects.get_or_create(id=1)
    fingerprint = signing.fingerprint(signing.signing_key().public_key())
    payload: dict[str, Any] = {
        "seq": head.last_seq,
        "mac": head.last_mac,
        "count": head.last_seq,
        "at": now.isoformat(),
        "key": fingerprint,
    }
    signature = signing.sign(canonical(payload))
    last = _last_line(target)
    written = last is None or (last.get("seq"), last.get("mac")) != (head.last_seq, head.last_mac)
    webhook_error = ""
    if written:
        line = json.dumps({**payload, "sig": signature}, sort_keys=True, separators=(",", ":")) + "\n"
        _append_line(target, line)
        if settings.JITPORTAL_AUDIT_CHECKPOINT_WEBHOOK:
            webhook_error = _post_webhook(settings.JITPORTAL_AUDIT_CHECKPOINT_WEBHOOK, line)
    report = audit_verify(checkpoints=target)
    if not report.ok:
        logger.error("audit log verification failed: %s", report.problem)
    return AuditCheckpoint.objects.create(
        seq=head.last_seq,
        mac=head.last_mac,
        count=head.last_seq,
        at=now,
        key=fingerprint,
        signature=signature,
        written=written,
        verified_at=timezone.now(),
        ok=report.ok,
        problem=report.problem,
        first_bad_seq=report.first_bad_seq,
        checked=report.checked,
        checkpoints_checked=report.checkpoints_checked,
        unsealed=report.unsealed,
        oldest_unsealed_at=report.oldest_unsealed_at,
        webhook_error=webhook_error,
    )
