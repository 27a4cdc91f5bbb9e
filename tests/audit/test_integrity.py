"""Tampering with the sealed audit log shows, on SQLite and on PostgreSQL.

Every scenario writes to the tables behind the portal's back, as someone with
write access to the database would: the guarding triggers are dropped (or
disabled) first inside the test's transaction, which rolls that back. Then
``audit_verify`` with the signed checkpoint file, and ``manage.py
verify_audit --checkpoints``, must fail naming the first bad event.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction

from audit import signing, tasks
from audit.chain import canonical, event_mac
from audit.models import AuditChainHead, AuditEvent
from audit.services import audit_checkpoint, audit_record, audit_record_many, audit_seal, audit_verify
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

EVENTS = "requests_app_auditevent"
HEAD = "requests_app_auditchainhead"
SIZE = 120


def raw(sql: str, params: list | tuple = ()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def unguard() -> None:
    """What an attacker with DDL rights does first; the test's transaction rolls it back."""
    if connection.vendor == "postgresql":
        raw(f"ALTER TABLE {EVENTS} DISABLE TRIGGER USER")
        raw(f"ALTER TABLE {HEAD} DISABLE TRIGGER USER")
    else:
        raw("DROP TRIGGER IF EXISTS audit_event_append_only")
        raw("DROP TRIGGER IF EXISTS audit_head_forward_only")


def json_value() -> str:
    return "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"


@pytest.fixture
def log(tmp_path, requester, reviewer):
    """SIZE sealed events and a checkpoint file covering them all; returns the events by seq."""
    audit_record_many(
        {
            "action": "request.created",
            "actor": requester if n % 2 else reviewer,
            "target_type": "accessrequest",
            "target_id": str(n),
            "data": {"n": n, "reason": f"INC-{n}"},
        }
        for n in range(SIZE)
    )
    checkpoint = audit_checkpoint(path=tmp_path / "checkpoints.jsonl")
    assert checkpoint.ok and checkpoint.seq == SIZE
    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.seq for e in events] == list(range(1, SIZE + 1))
    return events


@pytest.fixture
def checkpoints(tmp_path, log):
    return tmp_path / "checkpoints.jsonl"


def broken_at(checkpoints, seq: int, *, words: str, event_id: int | None = None):
    report = audit_verify(checkpoints=checkpoints, batch_size=7)
    assert not report.ok, report
    assert report.first_bad_seq == seq, report
    if event_id is not None:
        assert report.first_bad_id == event_id, report
    assert words in report.problem, report
    if report.bad_line is None and "head was altered" not in report.problem:
        # Every event before the first bad one was checked and found intact.
        assert report.checked == seq - 1, report
    with pytest.raises(CommandError, match=f"seq {seq}\\b"):
        call_command("verify_audit", "--checkpoints", str(checkpoints))
    return report


# --- an untouched log -----------------------------------------------------------------------


def test_an_untouched_log_verifies_against_its_checkpoints(checkpoints, capsys):
    report = audit_verify(checkpoints=checkpoints, batch_size=7)
    assert (report.ok, report.checked, report.checkpoints_checked, report.unsealed) == (True, SIZE, 1, 0)
    call_command("verify_audit", "--checkpoints", str(checkpoints))
    assert capsys.readouterr().out.strip() == f"audit log intact: {SIZE} events, 1 checkpoints"


def test_events_are_chained_by_keyed_mac_over_every_column(log):
    previous = ""
    for event in log:
        assert event.prev_mac == previous
        assert event.mac == event_mac(
            settings.JITPORTAL_AUDIT_KEY,
            id=event.pk,
            seq=event.seq,
            created_at=event.created_at,
            actor_id=event.actor_id,
            actor_username=event.actor_username,
            action=event.action,
            target_type=event.target_type,
            target_id=event.target_id,
            data=event.data,
            prev_mac=event.prev_mac,
        )
        previous = event.mac
    head = AuditChainHead.objects.get()
    assert (head.last_seq, head.last_mac) == (SIZE, previous)


# --- an edited column ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("created_at", "2020-01-01 00:00:00+00:00"),
        ("actor_id", "other-user"),
        ("actor_username", "someone-else"),
        ("action", "request.approved"),
        ("target_type", "grant"),
        ("target_id", "999"),
        ("data", {"n": 2, "reason": "forged"}),
        ("prev_mac", "0" * 64),
        ("mac", "f" * 64),
    ],
)
def test_editing_any_column_is_detected_at_that_event(checkpoints, log, reviewer, column, value):
    target = log[2]
    unguard()
    if column == "actor_id":
        value = make_user("mallet").pk
    placeholder = json_value() if column == "data" else "%s"
    raw(
        f"UPDATE {EVENTS} SET {column} = {placeholder} WHERE id = %s",
        [json.dumps(value) if column == "data" else value, target.pk],
    )
    broken_at(checkpoints, 3, words="does not match its MAC", event_id=target.pk)


def test_changing_an_events_id_is_detected(checkpoints, log):
    unguard()
    raw(f"UPDATE {EVENTS} SET id = %s WHERE id = %s", [log[-1].pk + 1000, log[2].pk])
    broken_at(checkpoints, 3, words="does not match its MAC", event_id=log[-1].pk + 1000)


def test_changing_an_events_seq_is_detected_as_a_gap(checkpoints, log):
    unguard()
    raw(f"UPDATE {EVENTS} SET seq = %s WHERE id = %s", [SIZE + 50, log[2].pk])
    broken_at(checkpoints, 3, words="seq 3 is missing", event_id=log[3].pk)


# --- deleted events ------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 59, SIZE - 2])
def test_deleting_an_event_is_detected_at_its_seq(checkpoints, log, index):
    unguard()
    raw(f"DELETE FROM {EVENTS} WHERE id = %s", [log[index].pk])
    broken_at(checkpoints, index + 1, words="is missing", event_id=log[index + 1].pk)


def test_deleting_the_newest_event_is_detected_by_the_head(checkpoints, log):
    unguard()
    raw(f"DELETE FROM {EVENTS} WHERE id = %s", [log[-1].pk])
    broken_at(checkpoints, SIZE, words="the newest events were deleted")


@pytest.mark.parametrize("removed", [1, 100])
def test_deleting_the_newest_events_and_rolling_the_head_back_is_detected_by_the_checkpoint(checkpoints, log, removed):
    keep = SIZE - removed
    unguard()
    raw(f"DELETE FROM {EVENTS} WHERE seq > %s", [keep])
    raw(f"UPDATE {HEAD} SET last_seq = %s, last_mac = %s", [keep, log[keep - 1].mac])
    # The chain alone looks whole: only the signed checkpoint remembers the rest.
    assert audit_verify().ok
    broken_at(checkpoints, keep + 1, words="events were deleted, truncated or wiped")


def test_a_wiped_table_and_head_are_detected(checkpoints, log):
    unguard()
    raw(f"DELETE FROM {EVENTS}")
    raw(f"DELETE FROM {HEAD}")
    assert audit_verify().ok and audit_verify().checked == 0
    broken_at(checkpoints, 1, words="events were deleted, truncated or wiped")


# --- reordering ----------------------------------------------------------------------------


def test_swapping_two_events_seqs_is_detected(checkpoints, log):
    unguard()
    raw(f"UPDATE {EVENTS} SET seq = %s WHERE id = %s", [SIZE + 10, log[2].pk])
    raw(f"UPDATE {EVENTS} SET seq = 3 WHERE id = %s", [log[3].pk])
    raw(f"UPDATE {EVENTS} SET seq = 4 WHERE id = %s", [log[2].pk])
    broken_at(checkpoints, 3, words="does not match its MAC", event_id=log[3].pk)


def test_swapping_two_events_ids_is_detected(checkpoints, log):
    unguard()
    spare = log[-1].pk + 1000
    raw(f"UPDATE {EVENTS} SET id = %s WHERE id = %s", [spare, log[2].pk])
    raw(f"UPDATE {EVENTS} SET id = %s WHERE id = %s", [log[2].pk, log[3].pk])
    raw(f"UPDATE {EVENTS} SET id = %s WHERE id = %s", [log[3].pk, spare])
    broken_at(checkpoints, 3, words="does not match its MAC")


# --- rewrites with recomputed hashes --------------------------------------------------------


def _rewrite_from(log, index: int, *, key: str) -> None:
    """Change one event and recompute every later MAC and the head with ``key``."""
    unguard()
    prev_mac = log[index - 1].mac if index else ""
    for position, event in enumerate(log[index:], start=index):
        data = {"n": 0, "reason": "forged"} if position == index else event.data
        mac = event_mac(
            key,
            id=event.pk,
            seq=event.seq,
            created_at=event.created_at,
            actor_id=event.actor_id,
            actor_username=event.actor_username,
            action=event.action,
            target_type=event.target_type,
            target_id=event.target_id,
            data=data,
            prev_mac=prev_mac,
        )
        raw(
            f"UPDATE {EVENTS} SET data = {json_value()}, prev_mac = %s, mac = %s WHERE id = %s",
            [json.dumps(data), prev_mac, mac, event.pk],
        )
        prev_mac = mac
    raw(f"UPDATE {HEAD} SET last_mac = %s", [prev_mac])


def test_a_rewrite_with_recomputed_macs_without_the_key_is_detected_at_the_rewritten_event(checkpoints, log):
    _rewrite_from(log, 5, key="a-guessed-key")
    broken_at(checkpoints, 6, words="does not match its MAC", event_id=log[5].pk)


def test_a_rewrite_by_a_holder_of_the_mac_key_is_detected_by_the_signed_checkpoint(checkpoints, log):
    _rewrite_from(log, 5, key=settings.JITPORTAL_AUDIT_KEY)
    # With the MAC key the chain can be rebuilt; the checkpoint's signature key is elsewhere.
    assert audit_verify().ok
    broken_at(checkpoints, SIZE, words="the log was rewritten")


# --- the checkpoint file --------------------------------------------------------------------


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path, entries: list[dict]) -> None:
    path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))


def test_a_checkpoint_line_whose_signature_does_not_verify_is_named(checkpoints, log):
    audit_record(action="test.more")
    audit_checkpoint(path=checkpoints)
    entries = _lines(checkpoints)
    assert len(entries) == 2
    entries[1]["seq"] = entries[1]["seq"] + 1
    _write(checkpoints, entries)
    report = audit_verify(checkpoints=checkpoints)
    assert (report.ok, report.bad_line) == (False, 2)
    assert "checkpoint line 2: its signature does not verify" in report.problem
    with pytest.raises(CommandError, match="checkpoint line 2"):
        call_command("verify_audit", "--checkpoints", str(checkpoints))


def test_a_checkpoint_line_from_another_key_is_named(checkpoints, log):
    other = ed25519.Ed25519PrivateKey.generate()
    entry = {
        "seq": SIZE,
        "mac": log[-1].mac,
        "count": SIZE,
        "at": "2030-01-01T00:00:00+00:00",
        "key": signing.fingerprint(other.public_key()),
    }
    entry["sig"] = base64.b64encode(other.sign(canonical(entry))).decode()
    _write(checkpoints, [*_lines(checkpoints), entry])
    report = audit_verify(checkpoints=checkpoints)
    assert (report.ok, report.bad_line) == (False, 2)
    assert "signed by another key" in report.problem
    # Claiming to be the portal's key does not help: the signature then fails.
    entry["key"] = signing.fingerprint(signing.verify_key())
    entry.pop("sig")
    entry["sig"] = base64.b64encode(other.sign(canonical(entry))).decode()
    _write(checkpoints, [_lines(checkpoints)[0], entry])
    report = audit_verify(checkpoints=checkpoints)
    assert (report.ok, report.bad_line) == (False, 2)
    assert "signature does not verify" in report.problem


def test_an_offline_verifier_needs_only_the_public_key(checkpoints, log, settings):
    settings.JITPORTAL_AUDIT_VERIFY_KEY = base64.b64encode(signing.public_bytes(signing.verify_key())).decode()
    settings.JITPORTAL_AUDIT_SIGNING_KEY = "not-needed"
    assert audit_verify(checkpoints=checkpoints).ok


def test_checkpoints_skip_a_line_when_the_head_has_not_moved(checkpoints, log):
    again = audit_checkpoint(path=checkpoints)
    assert (again.written, again.ok, again.checkpoints_checked) == (False, True, 1)
    audit_record(action="test.more")
    moved = audit_checkpoint(path=checkpoints)
    assert (moved.written, moved.seq) == (True, SIZE + 1)
    assert [e["seq"] for e in _lines(checkpoints)] == [SIZE, SIZE + 1]


def test_a_checkpoint_stores_a_failed_verification(checkpoints, log):
    unguard()
    raw(f"DELETE FROM {EVENTS} WHERE id = %s", [log[10].pk])
    checkpoint = audit_checkpoint(path=checkpoints)
    assert (checkpoint.ok, checkpoint.first_bad_seq) == (False, 11)
    assert "seq 11 is missing" in checkpoint.problem


# --- the unsealed window ---------------------------------------------------------------------


def test_unsealed_events_are_reported_and_fail_only_past_the_bound(log, settings):
    event = audit_record(action="test.pending")
    report = audit_verify()
    assert (report.ok, report.unsealed, report.oldest_unsealed_at) == (True, 1, event.created_at)
    settings.JITPORTAL_AUDIT_UNSEALED_MAX_SECONDS = 0
    report = audit_verify()
    assert not report.ok
    assert report.first_bad_id == event.pk
    assert "the sealer is not running" in report.problem
    audit_seal()
    assert audit_verify().ok


# --- the command's exit status ---------------------------------------------------------------


def test_verify_audit_exits_0_when_intact_and_1_naming_the_first_bad_event(checkpoints, log, capsys, monkeypatch):
    # run_from_argv closes every connection when it ends, which would end the test's transaction.
    monkeypatch.setattr(connections, "close_all", lambda: None)
    execute_from_command_line(["manage.py", "verify_audit", "--checkpoints", str(checkpoints)])
    assert "audit log intact" in capsys.readouterr().out
    unguard()
    raw(f"DELETE FROM {EVENTS} WHERE id = %s", [log[4].pk])
    with pytest.raises(SystemExit) as exc:
        execute_from_command_line(["manage.py", "verify_audit", "--checkpoints", str(checkpoints)])
    assert exc.value.code == 1
    assert f"seq 5, id {log[5].pk}" in capsys.readouterr().err


def test_audit_checkpoint_command_prints_the_checkpoint_and_fails_on_a_broken_log(tmp_path, log, capsys):
    path = tmp_path / "other.jsonl"
    call_command("audit_checkpoint", "--file", str(path))
    assert f"checkpoint seq {SIZE} mac {log[-1].mac[:16]}" in capsys.readouterr().out
    unguard()
    raw(f"UPDATE {EVENTS} SET action = 'x' WHERE id = %s", [log[0].pk])
    with pytest.raises(CommandError, match="seq 1"):
        call_command("audit_checkpoint", "--file", str(path))


# --- the trigger -----------------------------------------------------------------------------


def refused(sql: str, params: list | tuple = ()) -> None:
    with pytest.raises(DatabaseError), transaction.atomic():
        raw(sql, params)


def test_the_trigger_refuses_updates_of_sealed_and_unsealed_events(log):
    pending = audit_record(action="test.pending")
    refused(f"UPDATE {EVENTS} SET action = 'x' WHERE id = %s", [log[0].pk])
    refused(f"UPDATE {EVENTS} SET mac = %s WHERE id = %s", ["0" * 64, log[0].pk])
    refused(f"UPDATE {EVENTS} SET seq = NULL WHERE id = %s", [log[0].pk])
    refused(f"UPDATE {EVENTS} SET action = 'x' WHERE id = %s", [pending.pk])
    # Sealing while changing a column is no seal.
    refused(f"UPDATE {EVENTS} SET seq = %s, action = 'x' WHERE id = %s", [SIZE + 1, pending.pk])
    refused(f"UPDATE {HEAD} SET last_seq = 3")
    assert audit_verify().ok
    assert AuditEvent.objects.get(pk=pending.pk).action == "test.pending"


def test_the_trigger_lets_the_sealer_seal(log):
    audit_record(action="test.pending")
    assert audit_seal() == 1
    assert audit_verify().checked == SIZE + 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="DELETE and TRUNCATE are refused on PostgreSQL")
@pytest.mark.postgres
def test_the_trigger_refuses_delete_and_truncate_on_postgresql(log):
    # The test database allows purging so teardown can empty it; production sessions do not set it.
    raw("SET LOCAL jitportal.audit_purge = 'off'")
    refused(f"DELETE FROM {EVENTS} WHERE id = %s", [log[-1].pk])
    refused(f"DELETE FROM {EVENTS}")
    refused(f"TRUNCATE {EVENTS}")
    refused(f"DELETE FROM {HEAD}")
    refused(f"TRUNCATE {HEAD}")
    assert AuditEvent.objects.count() == SIZE
    assert audit_verify().ok


def test_the_beat_schedule_seals_and_checkpoints(settings, tmp_path, requester):
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert schedule["seal-audit"]["task"] == "audit.tasks.seal_audit"
    assert schedule["seal-audit"]["schedule"] == settings.JITPORTAL_AUDIT_SEAL_SECONDS
    assert schedule["checkpoint-audit"]["task"] == "audit.tasks.checkpoint_audit"
    assert schedule["checkpoint-audit"]["schedule"] == settings.JITPORTAL_AUDIT_CHECKPOINT_SECONDS
    settings.JITPORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path / "beat.jsonl")
    audit_record(action="test.one", actor=requester)
    assert tasks.seal_audit() == 1
    audit_record(action="test.two", actor=requester)
    assert tasks.checkpoint_audit() is True
    assert _lines(tmp_path / "beat.jsonl")[0]["seq"] == 2
    assert timedelta(seconds=settings.JITPORTAL_AUDIT_SEAL_SECONDS) < timedelta(
        seconds=settings.JITPORTAL_AUDIT_UNSEALED_MAX_SECONDS
    )


# --- the admin ------------------------------------------------------------------------------


def test_the_admin_list_shows_seq_seal_and_the_newest_checkpoints_status(client, auditor, tmp_path):
    client.force_login(auditor)
    url = "/admin/audit/auditevent/"
    audit_record(action="test.pending", actor=auditor)
    page = client.get(url).content.decode()
    assert "Integrity: no checkpoint yet" in page
    assert "(unsealed)" in page

    checkpoint = audit_checkpoint(path=tmp_path / "checkpoints.jsonl")
    page = client.get(url).content.decode()
    assert f"Integrity: verified {checkpoint.checked} events and 1 checkpoints" in page
    assert "(unsealed)" not in page

    unguard()
    raw(f"UPDATE {EVENTS} SET action = 'x'")
    audit_checkpoint(path=tmp_path / "checkpoints.jsonl")
    assert "Integrity: verification FAILED" in client.get(url).content.decode()
