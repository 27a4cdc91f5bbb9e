"""A Django process the integration tests drive, against the database the worker and beat use.

It reads one JSON request per line on stdin (``{"op": ..., "args": {...}}``)
and answers one JSON line on stdout (``{"ok": ...}`` or ``{"error": ...}``),
so a test sets up data and reads results with the project's own models and
services, on SQLite or PostgreSQL alike, without sharing its own test
database with other processes.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections import Counter
from datetime import timedelta

import django

django.setup()

from django.contrib.auth.models import Group  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import Role, User  # noqa: E402
from accounts.services import token_create  # noqa: E402
from audit.models import AuditEvent  # noqa: E402
from audit.services import audit_verify  # noqa: E402
from requests_app.models import AccessRequest, Grant, Notification, NotificationChannel, SweepRun  # noqa: E402
from requests_app.services import request_create, request_review  # noqa: E402


def _people_and_role() -> tuple[User, User, Role]:
    engineers, _ = Group.objects.get_or_create(name="engineers")
    leads, _ = Group.objects.get_or_create(name="sre-leads")
    alice, created = User.objects.get_or_create(username="alice", defaults={"email": "alice@example.com"})
    if created:
        alice.groups.add(engineers)
    bob, created = User.objects.get_or_create(username="bob", defaults={"email": "bob@example.com"})
    if created:
        bob.groups.add(leads)
    role, created = Role.objects.get_or_create(
        name="prod-ops", defaults={"resource_kinds": ["node"], "logins": ["ubuntu"], "max_duration": timedelta(hours=8)}
    )
    if created:
        role.requestable_by.add(engineers)
        role.reviewers.add(leads)
    return alice, bob, role


def op_channel(*, name: str, kind: str, events: list[str], url: str = "", secret: str = "") -> int:
    return NotificationChannel.objects.create(name=name, kind=kind, events=events, url=url, secret=secret).pk


def op_create_request(*, reason: str = "INC-4211 disk full", duration: str = "30m") -> str:
    alice, _, role = _people_and_role()
    return str(request_create(requester=alice, roles=[role], reason=reason, duration=duration).pk)


def op_token() -> str:
    """An API token for alice, the requester."""
    alice, _, _ = _people_and_role()
    return token_create(user=alice, by=alice)[1]


def op_requests() -> list[str]:
    return [str(pk) for pk in AccessRequest.objects.order_by("created_at").values_list("pk", flat=True)]


def op_sweep_runs() -> dict:
    return {r.name: {"runs": r.runs, "max_lag": r.max_lag_seconds} for r in SweepRun.objects.all()}


def op_approved_grant(*, seconds: int) -> dict:
    alice, bob, role = _people_and_role()
    req = request_create(requester=alice, roles=[role], reason="INC-1", duration=seconds)
    request_review(request=req, reviewer=bob, decision="approve")
    grant = req.grants.get()
    return {"request": str(req.pk), "grant": grant.pk, "expires_at": grant.expires_at.isoformat()}


def op_grant(*, pk: int) -> dict:
    grant = Grant.objects.get(pk=pk)
    return {
        "ended_at": grant.ended_at.isoformat() if grant.ended_at else None,
        "expires_at": grant.expires_at.isoformat(),
        "state": grant.state,
        "ended_events": AuditEvent.objects.filter(action="grant.ended", target_id=str(pk)).count(),
    }


def op_expired_grants(*, n: int) -> int:
    """``n`` grants that ended an hour ago and were never swept, made in bulk."""
    alice, bob, role = _people_and_role()
    req = request_create(requester=alice, roles=[role], reason="INC-2", duration="1h")
    request_review(request=req, reviewer=bob, decision="approve")
    now = timezone.now()
    Grant.objects.filter(request=req).update(starts_at=now - timedelta(hours=2), expires_at=now - timedelta(hours=1))
    Grant.objects.bulk_create(
        Grant(
            request=req,
            user=alice,
            role=role,
            starts_at=now - timedelta(hours=2),
            expires_at=now - timedelta(hours=1) + timedelta(milliseconds=i),
        )
        for i in range(1, n)
    )
    return Grant.objects.count()


def op_ended_count() -> int:
    return Grant.objects.filter(ended_at__isnull=False).count()


def op_sweep_state() -> dict:
    """Whether every grant was ended exactly once and wholly: flag, audit event and notification together."""
    audits = Counter(AuditEvent.objects.filter(action="grant.ended").values_list("target_id", flat=True))
    notes = Counter(Notification.objects.filter(event="grant.ended").values_list("subject_key", flat=True))
    half_done, twice = [], []
    grants = Grant.objects.values_list("pk", "ended_at")
    for pk, ended_at in grants:
        counts = (audits[str(pk)], notes[f"grant:{pk}"])
        expected = (1, 1) if ended_at else (0, 0)
        if counts != expected:
            (twice if max(counts) > 1 else half_done).append((pk, ended_at is not None, *counts))
    return {
        "grants": len(grants),
        "ended": sum(1 for _, ended_at in grants if ended_at),
        "half_done": half_done[:10],
        "twice": twice[:10],
        "chain_ok": audit_verify().ok,
        "delivered": Notification.objects.filter(status="delivered").count(),
    }


def op_notifications() -> list[dict]:
    return list(
        Notification.objects.order_by("pk").values(
            "pk", "channel__name", "event", "subject_key", "status", "attempts", "last_error"
        )
    )


OPS = {name[3:]: func for name, func in globals().items() if name.startswith("op_")}


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"ok": OPS[request["op"]](**request.get("args", {}))}
        except Exception:  # reported to the test
            reply = {"error": traceback.format_exc()}
        sys.stdout.write(json.dumps(reply, default=str) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
