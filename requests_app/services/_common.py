"""What the lifecycle's transitions share.

Reasons, row locks, the approval that creates grants, and ``_grants_end``, the one
way grants end early.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Max, Q

from accounts.models import Role
from accounts.selectors import roles_matching
from audit.services import audit_record, audit_record_many
from jitportal.errors import DomainError, StateConflict
from requests_app.models import MAX_REASON_LENGTH, AccessRequest, Grant, GrantQuerySet
from requests_app.notifications.messages import Event
from requests_app.notifications.outbox import notify

CLOCK_SKEW = timedelta(seconds=60)


class _Refusal(Exception):
    """Carries a refusal out of a rolled-back transaction so it can be audited."""

    def __init__(self, error: DomainError, action: str, data: dict):
        self.error = error
        self.action = action
        self.data = data


def _clean_reason(reason: object, *, field: str = "reason") -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise DomainError("must be text", field=field)
    reason = reason.strip()
    if len(reason) > MAX_REASON_LENGTH:
        raise DomainError(f"must be at most {MAX_REASON_LENGTH} characters", field=field)
    return reason


def _request_audit_data(access_request: AccessRequest) -> dict:
    return {"requester": access_request.requester.username, "state": access_request.state}


def _resolve(
    access_request: AccessRequest,
    *,
    state: str,
    reason: str,
    at: datetime | None,
    actor,
    action: str,
    data: dict | None = None,
) -> None:
    """Move a locked request to ``state`` with its resolution and audit ``action``.

    ``at`` is when it was resolved; None keeps the time it already has (a
    revocation ends an approved request, which was resolved when approved).
    """
    access_request.state = state
    access_request.resolution_reason = reason
    fields = ["state", "resolution_reason"]
    if at is not None:
        access_request.resolved_at = at
        fields.append("resolved_at")
    access_request.save(update_fields=fields)
    audit_record(
        action=action, actor=actor, target=access_request, data={**_request_audit_data(access_request), **(data or {})}
    )


def _lock(access_request: AccessRequest) -> AccessRequest:
    # Lock the request row only: FOR UPDATE on the joined requester row would
    # block the foreign-key checks (FOR KEY SHARE) of other transactions that
    # insert rows naming that user, and deadlock two people reviewing each
    # other's requests at once.
    return AccessRequest.objects.select_for_update(of=("self",)).select_related("requester").get(pk=access_request.pk)


def _expire_if_due(access_request: AccessRequest, at: datetime) -> bool:
    """Record the expiry of a locked request whose time to live has passed; True when it had.

    The caller commits this and then refuses what was asked, so the expiry is
    on record even though the action was not done.
    """
    expired = AccessRequest.State.EXPIRED
    if access_request.state == AccessRequest.State.PENDING and access_request.state_at(at) == expired:
        _resolve(access_request, state=expired, reason=PENDING_TTL_PASSED, at=at, actor=None, action="request.expired")
        notify(event=Event.REQUEST_EXPIRED, access_request=access_request)
        return True
    return False


def _expired_conflict(access_request: AccessRequest, what: str) -> StateConflict:
    when = access_request.pending_expires_at
    return StateConflict(
        f"the request expired at {when:%Y-%m-%d %H:%M:%S %Z} before it was {what}", code="request_expired"
    )


def _lock_with_chain(access_request: AccessRequest) -> AccessRequest:
    """Lock an extension's first request before the extension itself, else just the request.

    Whatever touches a chain of extensions (extending, approving an
    extension, revoking a grant of the chain) locks its first request first,
    so they run one at a time and always take their locks in the same order.
    ``extends`` never changes once written, so reading it unlocked is safe.
    """
    if access_request.extends_id is not None:
        _lock(AccessRequest(pk=access_request.extends_id))
    return _lock(access_request)


def _approve(
    access_request: AccessRequest,
    *,
    at: datetime,
    resolution: str,
    actor,
    auto: bool = False,
    duration: timedelta | None = None,
) -> list[Grant]:
    """Grant a locked request: for ``duration`` (narrowed by its reviews) or, by default, what it asked for."""
    duration = duration or access_request.duration
    if access_request.extends_id is not None:
        grants = _extension_grants_create(access_request, at=at, duration=duration)
    else:
        grants = _grants_create(access_request, at=at, duration=duration)
    _resolve(
        access_request,
        state=AccessRequest.State.APPROVED,
        reason=resolution,
        at=at,
        actor=actor,
        action="request.approved",
        data={"auto": auto, "grants": [g.pk for g in grants], "duration": int(duration.total_seconds())},
    )
    notify(event=Event.REQUEST_APPROVED, access_request=access_request)
    return grants


def _nothing_to_extend() -> StateConflict:
    return StateConflict(
        "none of the access this request extends is still live; request access again", code="nothing_live"
    )


def _chain_grants(root_id) -> GrantQuerySet:
    """The grants of a first request and of every extension of it."""
    return Grant.objects.filter(Q(request_id=root_id) | Q(request__extends_id=root_id))


def _chain_live_ends(root_id, at: datetime) -> dict[tuple[int, int | None], datetime]:
    """Per (role, resource), when the chain's live access to it ends: where an extension takes over."""
    rows = (
        _chain_grants(root_id)
        .live(at=at)
        .order_by()
        .values("role_id", "resource_id")
        .annotate(end=Max("expires_at"))
        .values_list("role_id", "resource_id", "end")
    )
    return {(role_id, resource_id): end for role_id, resource_id, end in rows}


def _extension_grants_create(access_request: AccessRequest, *, at: datetime, duration: timedelta) -> list[Grant]:
    """A new grant for each still-live grant of the chain, from where it ends: grants are never mutated."""
    roles = {role.pk: role for role in access_request.roles.all()}
    common = {"request": access_request, "user": access_request.requester, "created_at": at}
    grants = []
    for (role_id, resource_id), end in sorted(_chain_live_ends(access_request.extends_id, at).items(), key=str):
        role = roles.get(role_id)
        if role is None:  # never expected: an extension has the roles of what it extends
            continue
        window = {"starts_at": end, "expires_at": end + min(duration, role.max_duration)}
        grants.append(Grant(role=role, resource_id=resource_id, **window, **common))
    if not grants:
        raise _nothing_to_extend()
    return Grant.objects.bulk_create(grants)


def _grants_create(access_request: AccessRequest, *, at: datetime, duration: timedelta) -> list[Grant]:
    roles = sorted(access_request.roles.all(), key=lambda r: r.name)
    resources = list(access_request.resources.all())
    starts_at = max(access_request.start_time or at, at)

    def window(role: Role) -> dict:
        return {"starts_at": starts_at, "expires_at": starts_at + min(duration, role.max_duration)}

    # The requester object, not only its id: an answer naming the grants' user then reads no row.
    common = {"request": access_request, "user": access_request.requester, "created_at": at}
    if resources:
        grants = []
        for resource in resources:
            # The role is chosen again here, against the labels as they are now.
            role = next(iter(roles_matching(resource, roles)), roles[0])
            grants.append(Grant(role=role, resource=resource, **window(role), **common))
    else:
        grants = [Grant(role=role, resource=None, **window(role), **common) for role in roles]
    return Grant.objects.bulk_create(grants)


PENDING_TTL_PASSED = AccessRequest.PENDING_TTL_PASSED


def _continuing(access_request: AccessRequest, grants: list[Grant], *, at: datetime) -> list[Grant]:
    """The live grants of extensions that continue ``grants`` (same role and resource, later), locked.

    Ending a grant ends these too, or access would come back when the next
    window starts. The chain's first request is locked by the caller.
    """
    if not grants:
        return []
    same = Q()
    for g in grants:
        same |= Q(role_id=g.role_id, resource_id=g.resource_id, starts_at__gte=g.starts_at)
    root_id = access_request.extends_id or access_request.pk
    return list(
        _chain_grants(root_id)
        .live(at=at)
        .filter(same)
        .exclude(pk__in=[g.pk for g in grants])
        .select_for_update()
        .order_by("starts_at", "pk")
    )


def _grants_end(
    access_request: AccessRequest, grants: list[Grant], *, at: datetime, by, reason: str, action: str
) -> None:
    """End ``grants`` of the locked ``access_request`` now, and the extension grants that continue them.

    Audits each and revokes every request of the chain that has nothing live
    left. One conditional update (only grants still live move), so a grant
    ended by someone else meanwhile is never ended twice; the caller holds the
    chain's lock (``_lock_with_chain``), so no other transition of it runs in
    between.
    """
    continuing = _continuing(access_request, grants, at=at)
    requests = {access_request.pk: access_request}
    others = {g.request_id for g in continuing} - set(requests)
    for other in AccessRequest.objects.filter(pk__in=others).order_by("created_at", "pk"):
        requests[other.pk] = _lock(other)
    ended = [*grants, *continuing]
    Grant.objects.live(at=at).filter(pk__in=[g.pk for g in ended]).update(
        revoked_at=at, revoked_by=by, revoke_reason=reason
    )
    username = access_request.requester.username
    first = {(g.role_id, g.resource_id): g.pk for g in grants}
    audit_record_many(
        {
            "action": action,
            "actor": by,
            "target_type": "grant",
            "target_id": str(g.pk),
            "data": {
                "request": str(g.request_id),
                "user": username,
                "reason": reason,
                **({"continues": first.get((g.role_id, g.resource_id))} if g in continuing else {}),
            },
        }
        for g in ended
    )
    for each in requests.values():
        if each.state == AccessRequest.State.APPROVED and not each.grants.live(at=at).exists():
            _resolve(
                each,
                state=AccessRequest.State.REVOKED,
                reason=reason,
                at=None,
                actor=by,
                action="request.revoked",
                data={"by_owner": by is not None and by.pk == each.requester_id},
            )
