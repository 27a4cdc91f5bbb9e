"""Ending requests and grants: cancel, the pending-expiry and grant sweeps, revoke and drop."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts import capabilities
from accounts.models import Role, User
from audit.models import AuditEvent
from audit.services import audit_record_many
from inventory.models import Resource
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from requests_app.models import AccessRequest, Grant, GrantQuerySet
from requests_app.notifications.messages import Event
from requests_app.notifications.outbox import notify_many, notify_wanted
from requests_app.services._common import (
    PENDING_TTL_PASSED,
    _clean_reason,
    _expire_if_due,
    _expired_conflict,
    _grants_end,
    _lock,
    _lock_with_chain,
    _request_audit_data,
    _resolve,
)

# --- cancel, expire, revoke ---------------------------------------------------


def request_cancel(*, request: AccessRequest, user, reason: str = "", now: datetime | None = None) -> AccessRequest:
    """The requester withdraws a pending request; one past its time to live is recorded expired (409)."""
    reason = _clean_reason(reason)
    with transaction.atomic():
        access_request = _lock(request)
        at = now or timezone.now()
        if access_request.requester_id != user.pk:
            raise PermissionRefused("only the requester can cancel a request")
        expired = _expire_if_due(access_request, at)
        if not expired:
            if access_request.state != AccessRequest.State.PENDING:
                raise StateConflict(f"the request is {access_request.state}; only pending requests can be cancelled")
            _resolve(
                access_request,
                state=AccessRequest.State.CANCELLED,
                reason=reason or "cancelled by the requester",
                at=at,
                actor=user,
                action="request.cancelled",
            )
    if expired:
        # Raised after the commit: the expiry stays on record.
        request.state = access_request.state
        raise _expired_conflict(access_request, "cancelled")
    return access_request


def request_expire_pending(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Expire pending requests past their pending time to live; returns how many (at most ``limit``).

    Set-based and claim-safe: each batch is one transaction that locks due
    rows no one else holds (SKIP LOCKED; SQLite serialises writers instead),
    flips them with one conditional update, and writes their audit events and
    notifications. A worker dying mid-sweep leaves whole batches done or
    undone, and two sweeps never expire a request twice.
    """
    now = now or timezone.now()
    expired = 0
    while expired < limit:
        size = min(settings.JITPORTAL_SWEEP_BATCH_SIZE, limit - expired)
        with transaction.atomic():
            ids = list(
                AccessRequest.objects.due_for_expiry(at=now)
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("pending_expires_at")
                .values_list("pk", flat=True)[:size]
            )
            if not ids:
                break
            AccessRequest.objects.due_for_expiry(at=now).filter(pk__in=ids).update(
                state=AccessRequest.State.EXPIRED, resolved_at=now, resolution_reason=PENDING_TTL_PASSED
            )
            batch = list(
                AccessRequest.objects.filter(pk__in=ids, state=AccessRequest.State.EXPIRED, resolved_at=now)
                .select_related("requester")
                .order_by("pending_expires_at")
            )
            audit_record_many({"action": "request.expired", "target": r, "data": _request_audit_data(r)} for r in batch)
            notify_many(event=Event.REQUEST_EXPIRED, subjects=[(r, None) for r in batch], now=now)
        expired += len(batch)
    return expired


def _sweep_grants(*, due: GrantQuerySet, claim: dict, handle: Callable[[list[int]], object]) -> int:
    """Claim due grants in batches, ``handle`` the claimed ids inside its transaction; returns how many.

    A batch locks rows no other sweep holds (SKIP LOCKED; SQLite serialises
    writers instead), claims them with one conditional update and hands their
    ids to ``handle`` to audit and announce, so each batch commits or rolls
    back whole and no grant is claimed twice.
    """
    done = 0
    while True:
        with transaction.atomic():
            locked = due.select_for_update(skip_locked=True).order_by("expires_at")
            ids = list(locked.values_list("pk", flat=True)[: settings.JITPORTAL_SWEEP_BATCH_SIZE])
            if not ids:
                return done
            claimed = due.filter(pk__in=ids).update(**claim)
            if claimed != len(ids):  # the rows are locked, so never expected; if so, handle only what was claimed
                ids = list(Grant.objects.filter(pk__in=ids, **claim).values_list("pk", flat=True))
            if ids:
                handle(ids)
        done += len(ids)


# What a message about a grant reads (notifications/messages.py): thousands of grants a sweep
# are loaded with these columns only, not the roles' and resources' JSON or the users' every field.
_MESSAGE_FIELDS = [
    "request_id",
    "user_id",
    "role_id",
    "resource_id",
    "revoked_by_id",
    "starts_at",
    "expires_at",
    "revoked_at",
    "revoke_reason",
    "request__requester_id",
    "request__extends_id",
    "request__reason",
    "request__state",
    "request__duration",
    "request__resolution_reason",
    "request__pending_expires_at",
    "request__approvals_required",
    "request__start_time",
    "request__break_glass",
    "request__post_review",
    "request__requester__username",
    "request__requester__first_name",
    "request__requester__last_name",
    "request__requester__email",
    "role__name",
    "resource__kind",
    "resource__name",
    "revoked_by__username",
]


def _notify_grants(*, event: str, ids: list[int], now: datetime) -> None:
    # Grants are loaded as objects only when some channel will get a message built from them.
    if notify_wanted(event):
        grants = (
            Grant.objects.filter(pk__in=ids)
            .select_related("request__requester", "role", "resource", "revoked_by")
            .only(*_MESSAGE_FIELDS)
        )
        notify_many(event=event, subjects=[(g.request, g) for g in grants.order_by("expires_at", "pk")], now=now)


def grants_end_expired(*, now: datetime | None = None) -> int:
    """Record the end of grants whose window closed or that were revoked; returns how many.

    Access never waited for this (the check reads the timestamps): the sweep
    sets ``ended_at``, audits ``grant.ended`` and tells the requester. A grant
    whose reminder window passed unseen (the sweeps were stopped) is recorded
    as ``grant.reminder_missed`` rather than lost without a trace. The audit
    entries are built from one query of plain values per batch.
    """
    now = now or timezone.now()
    before = settings.JITPORTAL_REMINDER_BEFORE
    if connection.vendor == "postgresql":
        return _end_expired_by_statement(now=now, before=before)

    def handle(ids: list[int]) -> None:
        rows = (
            Grant.objects.filter(pk__in=ids)
            .order_by("expires_at", "pk")
            .values_list(
                "pk",
                "request_id",
                "request__requester__username",
                "role__name",
                "resource__kind",
                "resource__name",
                "starts_at",
                "expires_at",
                "revoked_at",
                "reminded_at",
            )
        )
        events = []
        for pk, request_id, username, role, kind, name, starts_at, expires_at, revoked_at, reminded_at in rows:
            target = {"target_type": "grant", "target_id": str(pk)}
            events.append(
                {
                    "action": "grant.ended",
                    **target,
                    "data": {
                        "request": str(request_id),
                        "user": username,
                        "role": role,
                        "resource": f"{kind}/{name}" if kind is not None else None,
                        "expires_at": expires_at.isoformat(),
                        "why": "revoked" if revoked_at is not None else "expired",
                    },
                }
            )
            # Unreminded is fine for a grant too short to be reminded, or revoked; otherwise the window was missed.
            if reminded_at is None and revoked_at is None and expires_at - starts_at > before:
                due_at = (expires_at - before).isoformat()
                events.append(
                    {"action": "grant.reminder_missed", **target, "data": {"user": username, "due_at": due_at}}
                )
        audit_record_many(events)
        _notify_grants(event=Event.GRANT_ENDED, ids=ids, now=now)

    return _sweep_grants(due=Grant.objects.due_to_end(at=now), claim={"ended_at": now}, handle=handle)


def _isoformat_sql(column: str) -> str:
    """SQL giving a timestamptz as Python's ``isoformat()`` of it in UTC (no fraction when it has none)."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') "
        f"|| CASE WHEN date_trunc('second', {utc}) = {utc} THEN '' ELSE to_char({utc}, '.US') END || '+00:00'"
    )


def _end_expired_sql(*, claim_sql: str) -> str:
    """One statement per batch: claim due grants (SKIP LOCKED), mark them ended, write their audit rows.

    Every value of an event is built by the database from the claimed rows, so
    no grant crosses into Python; only the ids come back, for the outbox.
    The audit rows are the ones ``grants_end_expired`` writes on other
    databases, in the same order (by expiry, ended before reminder_missed).
    """
    q = connection.ops.quote_name
    grant, request = q(Grant._meta.db_table), q(AccessRequest._meta.db_table)
    user, role = q(User._meta.db_table), q(Role._meta.db_table)
    resource, event = q(Resource._meta.db_table), q(AuditEvent._meta.db_table)
    expires, due_at = _isoformat_sql("c.expires_at"), _isoformat_sql("(c.expires_at - %(before)s)")
    # Identifiers come from the models, the claim from the ORM; every value is a parameter.
    return f"""
        WITH claimed AS (
            UPDATE {grant} g SET ended_at = %(now)s
            WHERE g.id = ANY(ARRAY({claim_sql})) AND g.ended_at IS NULL
            RETURNING g.id, g.request_id, g.role_id, g.resource_id, g.starts_at, g.expires_at,
                      g.revoked_at, g.reminded_at
        ), audited AS (
            INSERT INTO {event} (created_at, actor_id, actor_username, action, target_type, target_id,
                                 data, prev_mac, mac)
            SELECT %(created_at)s, NULL, '', e.action, 'grant', c.id::text, e.data, '', ''
            FROM claimed c
            JOIN {request} r ON r.id = c.request_id
            JOIN {user} u ON u.id = r.requester_id
            JOIN {role} ro ON ro.id = c.role_id
            LEFT JOIN {resource} re ON re.id = c.resource_id
            CROSS JOIN LATERAL (
                SELECT 0 AS n, 'grant.ended' AS action, jsonb_build_object(
                    'request', c.request_id::text, 'user', u.username, 'role', ro.name,
                    'resource', CASE WHEN re.id IS NULL THEN NULL ELSE re.kind || '/' || re.name END,
                    'expires_at', {expires},
                    'why', CASE WHEN c.revoked_at IS NULL THEN 'expired' ELSE 'revoked' END
                ) AS data
                UNION ALL
                SELECT 1, 'grant.reminder_missed', jsonb_build_object('user', u.username, 'due_at', {due_at})
                WHERE c.reminded_at IS NULL AND c.revoked_at IS NULL AND c.expires_at - c.starts_at > %(before)s
            ) e
            ORDER BY c.expires_at, c.id, e.n
        )
        SELECT id FROM claimed ORDER BY expires_at, id
    """  # noqa: S608


def _end_expired_by_statement(*, now: datetime, before: timedelta) -> int:
    """``grants_end_expired`` on PostgreSQL: one claim-and-audit statement per batch, then the outbox.

    Two sweeps never claim one grant: the subquery locks rows no one else
    holds (SKIP LOCKED) and the UPDATE re-checks ``ended_at`` under that lock.
    """
    batch = max(settings.JITPORTAL_SWEEP_BATCH_SIZE, 1)
    done = 0
    while True:
        with transaction.atomic():
            claim = (
                Grant.objects.due_to_end(at=now)
                .select_for_update(skip_locked=True)
                .order_by("expires_at")
                .values("pk")[:batch]
            )
            claim_sql, claim_params = claim.query.sql_with_params()
            # The claim's positional parameters are bound by name around it, so the whole runs as one statement.
            names = {f"claim{i}": value for i, value in enumerate(claim_params)}
            claim_sql = claim_sql % tuple(f"%({name})s" for name in names)
            params = {**names, "now": now, "before": before, "created_at": timezone.now()}
            with connection.cursor() as cursor:
                cursor.execute(_end_expired_sql(claim_sql=claim_sql), params)
                ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return done
            _notify_grants(event=Event.GRANT_ENDED, ids=ids, now=now)
        done += len(ids)


def grants_remind_expiring(*, now: datetime | None = None, before: timedelta | None = None) -> int:
    """Tell each requester once, ``before`` the end (default 10 minutes), that a grant ends soon.

    Grants no longer than ``before`` are not reminded: the approval already
    said how long they last. A reminder sent more than one sweep interval
    after it was due (the sweeps were stopped) still goes out while the grant
    lasts, and is audited as ``grant.reminded_late``.
    """
    now = now or timezone.now()
    before = before or settings.JITPORTAL_REMINDER_BEFORE
    slack = timedelta(seconds=settings.JITPORTAL_SWEEP_INTERVAL_SECONDS)

    def handle(ids: list[int]) -> None:
        # Late: the reminder was due (expires_at - before) more than one interval ago.
        late = (
            Grant.objects.filter(pk__in=ids, expires_at__lt=now - slack + before)
            .order_by("expires_at", "pk")
            .values_list("pk", "request__requester__username", "expires_at")
        )
        audit_record_many(
            {
                "action": "grant.reminded_late",
                "target_type": "grant",
                "target_id": str(pk),
                "data": {"user": username, "due_at": (expires_at - before).isoformat()},
            }
            for pk, username, expires_at in late
        )
        _notify_grants(event=Event.GRANT_EXPIRING, ids=ids, now=now)

    return _sweep_grants(
        due=Grant.objects.due_for_reminder(at=now, before=before), claim={"reminded_at": now}, handle=handle
    )


def grant_revoke(*, grant: Grant, by, reason: str, now: datetime | None = None) -> Grant:
    """End a grant now (capability ``revoke``); the request is revoked once none of its grants is still live."""
    capabilities.require(by, capabilities.Capability.REVOKE)
    reason = _clean_reason(reason)
    if not reason:
        raise DomainError("a reason is required to revoke access", field="reason")
    with transaction.atomic():
        access_request = _lock_with_chain(grant.request)
        locked = Grant.objects.select_for_update().get(pk=grant.pk)
        now = now or timezone.now()
        if locked.revoked_at is not None:
            raise StateConflict("the grant is already revoked")
        if locked.expires_at <= now:
            raise StateConflict("the grant has already ended")
        _grants_end(access_request, [locked], at=now, by=by, reason=reason, action="grant.revoked")
    grant.refresh_from_db()
    return grant


# --- drop: the owner gives access back ---------------------------------------

DROPPED = "given back by the owner"


def grant_drop(*, grant: Grant, user, reason: str = "", now: datetime | None = None) -> Grant:
    """The grant's owner ends it now (``grant.dropped``); its certificates are listed as revoked at once.

    Only the owner: staff end other people's grants with ``grant_revoke``. An
    ended or already revoked grant is a 409.
    """
    reason = _clean_reason(reason) or DROPPED
    if grant.user_id != user.pk:
        raise PermissionRefused("only the grant's owner can give it back")
    with transaction.atomic():
        access_request = _lock_with_chain(grant.request)
        locked = Grant.objects.select_for_update().get(pk=grant.pk)
        at = now or timezone.now()
        if locked.revoked_at is not None:
            raise StateConflict("the grant is already revoked", code="grant_ended")
        if locked.expires_at <= at:
            raise StateConflict("the grant has already ended", code="grant_ended")
        _grants_end(access_request, [locked], at=at, by=user, reason=reason, action="grant.dropped")
    grant.refresh_from_db()
    return grant


def request_drop(*, request: AccessRequest, user, reason: str = "", now: datetime | None = None) -> list[Grant]:
    """The requester gives back every live grant of an approved request; returns the grants ended.

    A request with nothing live (never approved, ended, dropped already) is a 409.
    """
    reason = _clean_reason(reason) or DROPPED
    with transaction.atomic():
        access_request = _lock_with_chain(request)
        at = now or timezone.now()
        if access_request.requester_id != user.pk:
            raise PermissionRefused("only the requester can give access back")
        if access_request.state != AccessRequest.State.APPROVED:
            raise StateConflict(
                f"the request is {access_request.state_at(at)}; it has no access to give back", code="nothing_live"
            )
        grants = list(access_request.grants.live(at=at).select_for_update().order_by("pk"))
        if not grants:
            raise StateConflict("no grant of this request is still live", code="nothing_live")
        _grants_end(access_request, grants, at=at, by=user, reason=reason, action="grant.dropped")
    request.state = access_request.state
    return grants
