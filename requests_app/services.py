"""The request lifecycle: one function per transition.

Each transition runs in one transaction that locks the request row, checks
the current state, changes it, writes the audit event and queues side effects
with ``transaction.on_commit``. Views, the admin, the API, the CLI and tasks
all call these functions, so every rule exists once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, QuerySet, Subquery, prefetch_related_objects
from django.utils import timezone

from accounts import capabilities
from accounts.mfa import mfa_fresh
from accounts.models import Role, User
from accounts.selectors import resources_searchable_by, reviewers_of, roles_matching, roles_requestable_by
from audit.models import AuditEvent
from audit.services import audit_record, audit_record_many
from inventory.models import Resource
from inventory.selectors import resource_lookup, resources_resolve
from jitportal.durations import format_duration, parse_duration
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from jitportal.statements import Statement
from requests_app.models import MAX_REASON_LENGTH, AccessRequest, Grant, GrantQuerySet, Review, grant_refusal
from requests_app.notifications.messages import Event
from requests_app.notifications.outbox import notify, notify_many, notify_wanted
from requests_app.preview import request_preview

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


# --- create -----------------------------------------------------------------


def _resolve_start(start_time: datetime | None, now: datetime) -> datetime | None:
    if start_time is None:
        return None
    if timezone.is_naive(start_time):
        raise DomainError("must include a time zone (e.g. 2026-01-01T09:00:00Z)", field="start_time")
    if start_time < now - CLOCK_SKEW:
        raise DomainError("is in the past", field="start_time")
    if start_time > now + settings.JITPORTAL_MAX_START_AHEAD:
        raise DomainError(
            f"is more than {format_duration(settings.JITPORTAL_MAX_START_AHEAD)} ahead", field="start_time"
        )
    return start_time


def _suggested_reviewers(suggested: list, *, roles: list[Role], requester) -> list:
    """The users named (usernames, or users), each of whom must be an eligible reviewer of ``roles``.

    An unknown name, an inactive user and one who may not review these roles
    get the same answer, so it never tells which users exist.
    """
    names = list(dict.fromkeys(getattr(u, "username", u) for u in suggested))
    if requester.username in names:
        raise DomainError("you cannot suggest yourself as a reviewer", field="suggested_reviewers")
    if not names:
        return []
    eligible = {u.username: u for u in reviewers_of(roles).filter(username__in=names).exclude(pk=requester.pk)}
    refused = [str(name) for name in names if name not in eligible]
    if refused:
        raise DomainError(
            f"not an eligible reviewer of the requested roles: {', '.join(refused)}", field="suggested_reviewers"
        )
    return [eligible[name] for name in names]


def _roles_named(roles: list, requestable: list[Role]) -> list[Role]:
    """Roles given as objects or names; a name the requester may not request reads as one that does not exist."""
    by_name = {role.name: role for role in requestable}
    missing = [role for role in roles if isinstance(role, str) and role not in by_name]
    if missing:
        raise DomainError(f"no such role: {', '.join(missing)}", field="roles")
    return [by_name[role] if isinstance(role, str) else role for role in roles]


def _resources_named(resources: list, *, requester, requestable: list[Role]) -> list[Resource]:
    """Resources given as objects, or references (ids, ``kind/name``) looked up among those the requester may search.

    A reference to a resource the requester may not search is answered
    exactly like one to a resource that does not exist.
    """
    if all(isinstance(resource, Resource) for resource in resources):
        return resources
    refs = [resource.pk if isinstance(resource, Resource) else resource for resource in resources]
    return resources_resolve(refs, queryset=resources_searchable_by(requester, roles=requestable))


def request_create(
    *,
    requester,
    resources: list[Resource | str | int] | None = None,
    roles: list[Role | str] | None = None,
    reason: str = "",
    duration: object = None,
    start_time: datetime | None = None,
    suggested_reviewers: list | None = None,
    now: datetime | None = None,
) -> AccessRequest:
    """Create a request for roles, or for resources (roles picked when not named).

    ``roles`` are roles or their names, ``resources`` resources or references
    to them (ids, ``kind/name``), looked up among what the requester may
    request and search. ``suggested_reviewers`` are usernames (or users) of
    eligible reviewers of the roles.

    A request whose roles are all break-glass is approved at once and awaits
    its review afterwards (``post_review``); one whose roles all auto-approve
    is approved at once (still audited); no other path creates an approved request. The request returned holds its
    roles, resources and suggested reviewers as written, so reading them
    costs no query.
    """
    now = now or timezone.now()
    if not requester.is_active:
        raise PermissionRefused("your account is not active")
    requestable = roles_requestable_by(requester)
    preview = request_preview(
        requestable=requestable,
        resources=_resources_named(resources or [], requester=requester, requestable=requestable),
        roles=_roles_named(roles or [], requestable),
    )
    request_roles, request_resources = list(preview.roles), list(preview.resources)
    reason = _clean_reason(reason)
    preview.reason_check(reason)
    value = preview.duration(duration)
    start = _resolve_start(start_time, now)
    reviewers = _suggested_reviewers(suggested_reviewers or [], roles=request_roles, requester=requester)

    with transaction.atomic():
        access_request = AccessRequest.objects.create(
            requester=requester,
            reason=reason,
            duration=value,
            start_time=start,
            created_at=now,
            pending_expires_at=now + preview.pending_ttl,
            approvals_required=preview.approvals_required,
            denials_required=preview.denials_required,
        )
        # add(), not set(): a new request has no rows to compare with, so each is one INSERT.
        access_request.roles.add(*request_roles)
        if request_resources:
            access_request.resources.add(*request_resources)
        if reviewers:
            access_request.suggested_reviewers.add(*reviewers)
        # Never changed once written, so held on the request returned: reading them costs no query.
        # In the order a read gives them (each model's ordering; names compared as the C collation does).
        access_request.hold(
            roles=sorted(request_roles, key=lambda r: r.name),
            resources=sorted(request_resources, key=lambda r: (r.kind, r.name)),
            suggested_reviewers=sorted(reviewers, key=lambda u: u.username),
        )
        audit_record(
            action="request.created",
            actor=requester,
            target=access_request,
            data={
                "roles": [r.name for r in request_roles],
                "resources": [r.ref for r in request_resources],
                "reason": reason,
                "duration": int(value.total_seconds()),
                "start_time": start.isoformat() if start else None,
                "suggested_reviewers": [u.username for u in reviewers],
            },
        )
        if preview.break_glass:
            _break_glass(access_request, at=now)
        elif preview.auto_approve:
            _approve(access_request, at=now, resolution="auto-approved by role policy", actor=requester, auto=True)
        else:
            notify(event=Event.REQUEST_CREATED, access_request=access_request)
    return access_request


# --- extend -----------------------------------------------------------------


def extensions_used(root: AccessRequest, *, at: datetime) -> int:
    """Extensions that count against ``max_extensions``: pending (still within their time to live) and approved."""
    return (
        AccessRequest.objects.filter(extends_id=root.pk)
        .filter(Q(state=AccessRequest.State.APPROVED) | Q(state=AccessRequest.State.PENDING, pending_expires_at__gt=at))
        .count()
    )


def extension_refusal(root: AccessRequest, *, user, at: datetime, live: bool, used: int) -> DomainError | None:
    """Why ``user`` may not extend ``root`` (the first request of its chain) now, or None.

    The one rule behind the service and the pages' *Extend* offer; ``live``
    is whether any grant of the chain is still live, ``used`` how many
    extensions count (``extensions_used``).
    """
    if root.requester_id != user.pk:
        return PermissionRefused("only the requester can extend a request", field="request")
    state = root.state_at(at)
    if state != AccessRequest.State.APPROVED:
        return StateConflict(f"the request is {state}; only approved access can be extended", code="not_approved")
    if not live:
        return _nothing_to_extend()
    roles = list(root.roles.all())
    limit = min(r.max_extensions for r in roles)
    if used >= limit:
        strictest = min(roles, key=lambda r: r.max_extensions)
        allowed = "no extension" if limit == 0 else f"at most {limit} extension{'s' if limit != 1 else ''}"
        return StateConflict(f"role {strictest.name} allows {allowed} of a request", code="max_extensions")
    return None


def extension_offer(access_request: AccessRequest, *, user, at: datetime) -> tuple[datetime | None, DomainError | None]:
    """When the live access ``user`` could extend from ``access_request`` ends, or why it cannot be extended.

    For the pages: at most four queries, whatever the chain holds. The service decides again when asked.
    """
    root = access_request
    if access_request.extends_id is not None:
        root = AccessRequest.objects.prefetch_related("roles").get(pk=access_request.extends_id)
    ends = _chain_live_ends(root.pk, at)
    used = extensions_used(root, at=at) if ends else 0
    refusal = extension_refusal(root, user=user, at=at, live=bool(ends), used=used)
    return (None, refusal) if refusal is not None else (max(ends.values()), None)


def request_extend(
    *, request: AccessRequest, requester, duration: object = None, reason: str = "", now: datetime | None = None
) -> AccessRequest:
    """Ask for more of the access an approved request gave, while some of it is still live.

    The extension is a new request (``extends``: the first request of the
    chain, also when an extension is extended) with the same roles and
    resources, checked and reviewed by the same rules as a new request; its
    time to live ends with the live access it would extend. Once approved it
    adds a grant from the end of each still-live grant (``_approve``). The
    chain's first request is locked, so two extensions at once are counted
    one after the other.
    """
    reason = _clean_reason(reason)
    with transaction.atomic():
        root = _lock(AccessRequest(pk=request.extends_id or request.pk))
        at = now or timezone.now()
        prefetch_related_objects([root], "roles", "resources")
        ends = _chain_live_ends(root.pk, at)
        refusal = extension_refusal(
            root, user=requester, at=at, live=bool(ends), used=extensions_used(root, at=at) if ends else 0
        )
        if refusal is not None:
            raise refusal
        if not requester.is_active:
            raise PermissionRefused("your account is not active")
        roles, resources = list(root.roles.all()), list(root.resources.all())
        # The same checks as a new request: still eligible for the roles, the reason, the cap.
        preview = request_preview(requestable=roles_requestable_by(requester), resources=resources, roles=roles)
        preview.reason_check(reason)
        value = preview.duration(duration)
        extension = AccessRequest.objects.create(
            requester=requester,
            extends=root,
            reason=reason,
            duration=value,
            created_at=at,
            pending_expires_at=min(at + preview.pending_ttl, max(ends.values())),
            approvals_required=preview.approvals_required,
            denials_required=preview.denials_required,
        )
        extension.roles.add(*roles)
        if resources:
            extension.resources.add(*resources)
        extension.hold(roles=roles, resources=resources, suggested_reviewers=[])
        audit_record(
            action="request.extended",
            actor=requester,
            target=extension,
            data={
                "extends": str(root.pk),
                "roles": [r.name for r in roles],
                "resources": [r.ref for r in resources],
                "reason": reason,
                "duration": int(value.total_seconds()),
                "pending_expires_at": extension.pending_expires_at.isoformat(),
            },
        )
        if preview.auto_approve:
            _approve(extension, at=at, resolution="auto-approved by role policy", actor=requester, auto=True)
        else:
            notify(event=Event.REQUEST_CREATED, access_request=extension)
    return extension


BREAK_GLASS_RESOLUTION = "break-glass: approved at once, to be reviewed afterwards"


def _break_glass(access_request: AccessRequest, *, at: datetime) -> None:
    """Approve a new break-glass request at once and ask its reviewers, urgently, to review it afterwards."""
    access_request.break_glass = True
    access_request.post_review = AccessRequest.PostReview.PENDING
    access_request.post_review_announced_at = at
    access_request.save(update_fields=["break_glass", "post_review", "post_review_announced_at"])
    audit_record(
        action="request.break_glass",
        actor=access_request.requester,
        target=access_request,
        data={"requester": access_request.requester.username, "reason": access_request.reason},
    )
    _approve(access_request, at=at, resolution=BREAK_GLASS_RESOLUTION, actor=access_request.requester, auto=True)
    notify(event=Event.REQUEST_BREAK_GLASS, access_request=access_request)


# --- review -----------------------------------------------------------------


def reviewer_is_eligible(*, reviewer, roles: list[Role]) -> bool:
    """Eligible when the reviewer is active and in a reviewer group of every role (``reviewers_of``)."""
    return reviewers_of(roles).filter(pk=reviewer.pk).exists()


@dataclass(frozen=True)
class ReviewRefusal:
    """Why ``reviewer`` may not review a request now: a stable ``code`` and the message the service gives."""

    class Code(StrEnum):
        SELF = "self"
        INELIGIBLE = "ineligible"
        NOT_PENDING = "not_pending"
        ALREADY_REVIEWED = "already_reviewed"
        MFA_REQUIRED = "mfa_required"

    code: Code
    message: str
    state: str  # the request's state when it was asked

    @property
    def audit_action(self) -> str | None:
        """The audit action of a refusal that is recorded: who tried to review what they may not."""
        return {
            self.Code.SELF: "review.refused_self",
            self.Code.INELIGIBLE: "review.refused_ineligible",
            self.Code.MFA_REQUIRED: "review.refused_mfa",
        }.get(self.code)

    @property
    def error(self) -> DomainError:
        if self.code == self.Code.MFA_REQUIRED:
            return PermissionRefused(self.message, code="mfa_required")
        if self.code in (self.Code.SELF, self.Code.INELIGIBLE):
            return PermissionRefused(self.message)
        return StateConflict(self.message)


MFA_REQUIRED_MESSAGE = (
    "reviewing this request needs a second factor verified in the last 15 minutes "
    "(verify at /mfa/verify/; an API token counts only when made from such a session)"
)


def review_refusal(
    access_request: AccessRequest,
    reviewer,
    *,
    at: datetime,
    eligible: bool | None = None,
    reviewed: bool | None = None,
    mfa_verified_at: datetime | None = None,
    requires_mfa: bool | None = None,
) -> ReviewRefusal | None:
    """Why ``request_review`` would refuse ``reviewer`` on ``access_request`` at ``at``, or None.

    The one rule behind the service and the admin's hints, checked in the
    service's order: one's own request, eligibility for every role, a state
    other than pending (a pending request past its time to live included),
    an earlier review by the same reviewer, and for a role with
    ``review_requires_mfa`` a second factor verified (``mfa_verified_at``,
    from the reviewer's session or token) within ``mfa_fresh``'s 15 minutes.
    ``eligible``, ``reviewed`` and ``requires_mfa`` are for a caller that
    looked them up for many requests at once (``review_refusals``); otherwise
    each costs one query (none with the roles prefetched), asked only when
    the earlier checks pass.
    """
    Code = ReviewRefusal.Code
    state = access_request.state_at(at)
    if access_request.requester_id == reviewer.pk:
        return ReviewRefusal(Code.SELF, "you cannot review your own request", state)
    if eligible is None:
        eligible = reviewer_is_eligible(reviewer=reviewer, roles=list(access_request.roles.all()))
    if not eligible:
        return ReviewRefusal(Code.INELIGIBLE, "you are not a reviewer for every role of this request", state)
    if state != AccessRequest.State.PENDING:
        return ReviewRefusal(Code.NOT_PENDING, f"the request is {state}; only pending requests can be reviewed", state)
    if reviewed is None:
        reviewed = Review.objects.filter(request=access_request, reviewer=reviewer).exists()
    if reviewed:
        return ReviewRefusal(Code.ALREADY_REVIEWED, "you have already reviewed this request", state)
    if requires_mfa is None:
        requires_mfa = any(role.review_requires_mfa for role in access_request.roles.all())
    if requires_mfa and not mfa_fresh(mfa_verified_at, at=at):
        return ReviewRefusal(Code.MFA_REQUIRED, MFA_REQUIRED_MESSAGE, state)
    return None


def review_refusals(
    requests: list[AccessRequest], reviewer, *, at: datetime, mfa_verified_at: datetime | None = None
) -> dict:
    """``review_refusal`` for each of ``requests`` (by primary key, refused ones only), in one query.

    Eligibility comes from ``AccessRequestQuerySet.reviewable_by``, the same
    rule as ``reviewers_of`` seen from the reviewer's side.
    """
    facts = (
        AccessRequest.objects.filter(pk__in=[r.pk for r in requests])
        .annotate(
            eligible=Exists(AccessRequest.objects.reviewable_by(reviewer).filter(pk=OuterRef("pk"))),
            reviewed=Exists(Review.objects.filter(request=OuterRef("pk"), reviewer_id=reviewer.pk)),
            requires_mfa=Exists(Role.objects.filter(access_requests=OuterRef("pk"), review_requires_mfa=True)),
        )
        .values_list("pk", "eligible", "reviewed", "requires_mfa")
    )
    known = {pk: (eligible, reviewed, mfa) for pk, eligible, reviewed, mfa in facts}
    refusals = {}
    for access_request in requests:
        eligible, reviewed, requires_mfa = known.get(access_request.pk, (False, False, False))
        refusal = review_refusal(
            access_request,
            reviewer,
            at=at,
            eligible=eligible,
            reviewed=reviewed,
            mfa_verified_at=mfa_verified_at,
            requires_mfa=requires_mfa,
        )
        if refusal is not None:
            refusals[access_request.pk] = refusal
    return refusals


def requester_refusal(access_request: AccessRequest, *, roles: list[Role]) -> str | None:
    """Why the requester may no longer be given ``roles`` (the rule ``request_create`` applied), or None."""
    requester = access_request.requester
    if not requester.is_active:
        return f"{requester.username}'s account is not active; the request cannot be approved"
    requestable = set(Role.objects.requestable_by(requester).values_list("pk", flat=True))
    lost = [r.name for r in roles if r.pk not in requestable]
    if lost:
        return f"{requester.username} may no longer request {', '.join(sorted(lost))}"
    return None


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


def _review_facts(access_request: AccessRequest, *, reviewer, roles: list[Role]) -> dict:
    """What a review of the locked ``access_request`` turns on, read in one statement.

    Whether ``reviewer`` is eligible (``reviewers_of``, as ``reviewer_is_eligible``
    asks it) and has reviewed it already, and the reviews so far toward each
    threshold: approvals of reviewers still eligible, and every denial (a
    denial stands even if its author has left the reviewers: it never grants
    anything). Read after the lock is taken, so no review of this request can
    commit between this and the caller's own.
    """
    eligible = reviewers_of(roles).values("pk")
    return (
        AccessRequest.objects.filter(pk=access_request.pk)
        .annotate(
            eligible=Exists(reviewers_of(roles).filter(pk=reviewer.pk)),
            reviewed=Exists(Review.objects.filter(request=OuterRef("pk"), reviewer_id=reviewer.pk)),
            approvals=Count(
                "reviews", filter=Q(reviews__decision=Review.Decision.APPROVE, reviews__reviewer__in=eligible)
            ),
            denials=Count("reviews", filter=Q(reviews__decision=Review.Decision.DENY)),
            narrowest=Min("reviews__duration", filter=Q(reviews__decision=Review.Decision.APPROVE)),
        )
        .values("eligible", "reviewed", "approvals", "denials", "narrowest")
        .get()
    )


def _review_duration(decision: str, duration: object) -> timedelta | None:
    """The shorter access an approving review allows, or None for what was requested."""
    if duration is None or duration == "":
        return None
    if decision != Review.Decision.APPROVE:
        raise DomainError("only an approving review may shorten the access", field="duration")
    try:
        return parse_duration(duration)
    except ValueError as exc:
        raise DomainError(str(exc), field="duration") from exc


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


def _narrowing_check(access_request: AccessRequest, narrowed: timedelta | None) -> None:
    if narrowed is not None and narrowed > access_request.duration:
        raise DomainError(
            f"{format_duration(narrowed)} is longer than the "
            f"{format_duration(access_request.duration)} requested; an approval may only shorten it",
            field="duration",
        )


def _approve_reviewed(
    access_request: AccessRequest,
    *,
    roles: list[Role],
    at: datetime,
    reviewer,
    reason: str,
    audit_data: dict,
    durations: tuple,
) -> None:
    """The approving review met the threshold: grant for the shortest of ``durations``, unless refused (audited)."""
    ineligible = requester_refusal(access_request, roles=roles)
    if ineligible is not None:
        raise _Refusal(StateConflict(ineligible), "review.refused_requester_ineligible", audit_data)
    # Read under the chain's lock (_lock_with_chain): a revocation of what it extends has committed or waits.
    if access_request.extends_id is not None and not _chain_live_ends(access_request.extends_id, at):
        raise _Refusal(_nothing_to_extend(), "review.refused_nothing_to_extend", audit_data)
    shortest = min(d for d in durations if d)
    _approve(access_request, at=at, resolution=reason, actor=reviewer, duration=shortest)


def request_review(
    *,
    request: AccessRequest,
    reviewer,
    decision: str,
    reason: str = "",
    duration: object = None,
    mfa_verified_at: datetime | None = None,
    now: datetime | None = None,
) -> Review:
    """Record one reviewer's decision and resolve the request when a threshold is met.

    ``mfa_verified_at`` is when the reviewer's session (or the session that
    made their API token) last verified a second factor; a path that has
    none (chat) passes nothing, and a role with ``review_requires_mfa``
    refuses it (403, code ``mfa_required``, audited ``review.refused_mfa``).

    Only reviews whose reviewers are still eligible count toward the approval
    threshold, and the approving review re-checks that the requester may
    still have the roles (a 409 naming why otherwise, audited, nothing
    approved). An approving review may carry a ``duration`` no longer than
    the request's: the grants last the shortest of the request's and the
    approving reviews' durations. The clock is read once the row is locked,
    so recorded times follow the order in which reviews really happened.
    """
    if decision not in Review.Decision.values:
        raise DomainError("must be 'approve' or 'deny'", field="decision")
    reason = _clean_reason(reason)
    if decision == Review.Decision.DENY and not reason:
        raise DomainError("a reason is required to deny a request; the requester is shown it", field="reason")
    narrowed = _review_duration(decision, duration)
    expired = False
    try:
        with transaction.atomic():
            access_request = _lock_with_chain(request)
            at = now or timezone.now()
            prefetch_related_objects([access_request], "roles")
            roles = list(access_request.roles.all())
            audit_data = {
                "decision": decision,
                "request": str(access_request.pk),
                "requester": access_request.requester.username,
            }
            facts = _review_facts(access_request, reviewer=reviewer, roles=roles)
            refusal = review_refusal(
                access_request,
                reviewer,
                at=at,
                eligible=facts["eligible"],
                reviewed=facts["reviewed"],
                mfa_verified_at=mfa_verified_at,
            )
            if refusal is not None and refusal.audit_action:
                raise _Refusal(refusal.error, refusal.audit_action, audit_data)
            if _expire_if_due(access_request, at):
                expired = True
            else:
                if refusal is not None:
                    raise refusal.error
                _narrowing_check(access_request, narrowed)
                review = Review.objects.create(
                    request=access_request,
                    reviewer=reviewer,
                    decision=decision,
                    reason=reason,
                    duration=narrowed,
                    created_at=at,
                )
                audit_record(
                    action="review.created",
                    actor=reviewer,
                    target=access_request,
                    data={
                        **audit_data,
                        "reason": reason,
                        "duration": int(narrowed.total_seconds()) if narrowed else None,
                    },
                )
                # The counts before this review plus this one (its reviewer is eligible: checked above).
                approvals = facts["approvals"] + (decision == Review.Decision.APPROVE)
                denials = facts["denials"] + (decision == Review.Decision.DENY)
                if denials >= access_request.denials_required:
                    _resolve(
                        access_request,
                        state=AccessRequest.State.DENIED,
                        reason=reason,
                        at=at,
                        actor=reviewer,
                        action="request.denied",
                    )
                    notify(event=Event.REQUEST_DENIED, access_request=access_request)
                elif approvals >= access_request.approvals_required:
                    _approve_reviewed(
                        access_request,
                        roles=roles,
                        at=at,
                        reviewer=reviewer,
                        reason=reason,
                        audit_data=audit_data,
                        durations=(access_request.duration, facts["narrowest"], narrowed),
                    )
                request.state = access_request.state
                return review
    except _Refusal as refusal:
        audit_record(
            action=refusal.action,
            actor=reviewer,
            target=request,
            data={**refusal.data, "message": refusal.error.message},
        )
        raise refusal.error from None
    if expired:
        request.state = access_request.state
        request.resolved_at = access_request.resolved_at
        raise _expired_conflict(access_request, "reviewed")
    raise AssertionError("unreachable")


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


PENDING_TTL_PASSED = AccessRequest.PENDING_TTL_PASSED


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


# --- break-glass post-review ----------------------------------------------------


class PostReviewDecision(StrEnum):
    RATIFY = "ratify"
    REJECT = "reject"


_POST_REVIEW_OUTCOME = {
    PostReviewDecision.RATIFY: AccessRequest.PostReview.RATIFIED,
    PostReviewDecision.REJECT: AccessRequest.PostReview.REJECTED,
}


def request_post_review(
    *, request: AccessRequest, reviewer, decision: str, reason: str = "", now: datetime | None = None
) -> AccessRequest:
    """Ratify or reject break-glass access after the fact; ``reject`` ends every live grant at once.

    Eligible reviewers of every role, never the requester (refusals audited
    like a review's). 409 for a request that was not break-glass or has been
    post-reviewed already. Allowed whatever the request's state: access given
    back or ended still deserves its review.
    """
    if decision not in list(PostReviewDecision):
        raise DomainError("must be 'ratify' or 'reject'", field="decision")
    reason = _clean_reason(reason)
    if decision == PostReviewDecision.REJECT and not reason:
        raise DomainError(
            "a reason is required to reject break-glass access; the requester is shown it", field="reason"
        )
    audit_data = {"decision": decision, "request": str(request.pk)}
    try:
        with transaction.atomic():
            access_request = _lock_with_chain(request)
            at = now or timezone.now()
            audit_data["requester"] = access_request.requester.username
            if access_request.requester_id == reviewer.pk:
                raise _Refusal(
                    PermissionRefused("you cannot post-review your own break-glass access"),
                    "review.refused_self",
                    audit_data,
                )
            if not reviewer_is_eligible(reviewer=reviewer, roles=list(access_request.roles.all())):
                raise _Refusal(
                    PermissionRefused("you are not a reviewer for every role of this request"),
                    "review.refused_ineligible",
                    audit_data,
                )
            if not access_request.break_glass:
                raise StateConflict("the request was not break-glass; it has no post-review", code="not_break_glass")
            if access_request.post_review != AccessRequest.PostReview.PENDING:
                raise StateConflict(
                    f"the request has been post-reviewed already ({access_request.post_review})",
                    code="already_post_reviewed",
                )
            access_request.post_review = _POST_REVIEW_OUTCOME[PostReviewDecision(decision)]
            access_request.post_reviewed_by = reviewer
            access_request.post_reviewed_at = at
            access_request.post_review_reason = reason
            access_request.save(
                update_fields=["post_review", "post_reviewed_by", "post_reviewed_at", "post_review_reason"]
            )
            audit_record(
                action="request.post_reviewed",
                actor=reviewer,
                target=access_request,
                data={**audit_data, "reason": reason},
            )
            if decision == PostReviewDecision.REJECT:
                live = list(access_request.grants.live(at=at).select_for_update().order_by("pk"))
                if live:
                    _grants_end(
                        access_request,
                        live,
                        at=at,
                        by=reviewer,
                        reason=f"break-glass rejected: {reason}",
                        action="grant.revoked",
                    )
    except _Refusal as refusal:
        audit_record(
            action=refusal.action,
            actor=reviewer,
            target=request,
            data={**refusal.data, "message": refusal.error.message},
        )
        raise refusal.error from None
    return access_request


def requests_announce_post_review(*, now: datetime | None = None, every: timedelta | None = None) -> int:
    """Announce again, once ``every`` (a day) since the last time, each break-glass request still awaiting review.

    Claim-safe like the other sweeps: a batch locks due rows no other run holds
    (SKIP LOCKED), claims them by moving ``post_review_announced_at`` with a
    conditional update, audits ``request.post_review_reminded`` and queues the
    urgent message, each day's under its own key so it is never queued twice.
    """
    now = now or timezone.now()
    every = every or settings.JITPORTAL_POST_REVIEW_REANNOUNCE
    due = AccessRequest.objects.filter(
        post_review=AccessRequest.PostReview.PENDING, post_review_announced_at__lt=now - every
    )
    done = 0
    while True:
        with transaction.atomic():
            ids = list(
                due.select_for_update(skip_locked=True, of=("self",))
                .order_by("post_review_announced_at")
                .values_list("pk", flat=True)[: settings.JITPORTAL_SWEEP_BATCH_SIZE]
            )
            if not ids:
                return done
            due.filter(pk__in=ids).update(post_review_announced_at=now)
            batch = list(
                AccessRequest.objects.filter(pk__in=ids, post_review_announced_at=now)
                .select_related("requester")
                .order_by("created_at")
            )
            audit_record_many(
                {"action": "request.post_review_reminded", "target": r, "data": _request_audit_data(r)} for r in batch
            )
            notify_many(
                event=Event.REQUEST_BREAK_GLASS,
                subjects=[(r, None) for r in batch],
                now=now,
                key_suffix=f"@{now:%Y-%m-%dT%H:%M}",
            )
        done += len(batch)


# --- access check -----------------------------------------------------------


NO_GRANT = "no active grant covers this resource"


class Decision(StrEnum):
    """The stable codes of an access decision, for machines (the CLI, host agents); ``reason`` is for people."""

    ALLOWED = "allowed"
    NO_GRANT = "no_grant"  # no live grant covers the resource (or no such resource: not told apart)
    LOGIN_NOT_ALLOWED = "login_not_allowed"  # a grant covers it, but its role does not allow this login
    USER_INACTIVE = "user_inactive"
    NOT_HONOURED = "not_honoured"  # a grant covers it but is no longer honoured (revoked, eligibility lost)


@dataclass
class AccessDecision:
    allowed: bool
    grant: Grant | None = None
    reason: str = ""
    code: str = Decision.ALLOWED

    @property
    def expires_at(self) -> datetime | None:
        return self.grant.expires_at if self.grant else None


def _covering_latest(*, user_id: int, at: datetime, resources: QuerySet) -> QuerySet:
    """Per role, the user's latest-ending active grant that could cover the one resource of ``resources``.

    A grant covers it when it is on that resource or role-wide; whether its
    role matches the resource is decided from the returned selector and
    labels (``Role.matches``), as the rest of the portal decides it. Each row
    carries the role's selector and logins, whether the user may still
    request the role (as ``Role.objects.requestable_by`` asks it) and the
    resource itself (uncorrelated subqueries, run once per statement), so the
    whole decision is one statement that reads a row per role however many
    grants the user holds.
    """
    resource = resources.order_by()
    covering = (
        Grant.objects.active(at=at)
        .filter(user_id=user_id)
        .filter(Q(resource_id=Subquery(resource.values("pk"))) | Q(resource__isnull=True))
    )
    # One probe per role down the (user, expires_at) index, stopping at the first row.
    latest = Role.objects.filter(pk__in=covering.values("role_id")).annotate(
        grant=Subquery(covering.filter(role_id=OuterRef("pk")).order_by("-expires_at").values("pk")[:1])
    )
    may_request = Role.requestable_by.through.objects.filter(role_id=OuterRef("role_id"), group__user=user_id)
    return (
        Grant.objects.filter(pk__in=latest.values("grant"))
        .annotate(
            eligible=Exists(may_request),
            checked_id=Subquery(resource.values("pk")),
            checked_kind=Subquery(resource.values("kind")),
            checked_name=Subquery(resource.values("name")),
            checked_labels=Subquery(resource.values("labels")),
        )
        .order_by()
        .values(
            "id",
            "role_id",
            "resource_id",
            "starts_at",
            "expires_at",
            "revoked_at",
            "role__name",
            "role__logins",
            "role__resource_kinds",
            "role__resource_labels",
            "eligible",
            "checked_id",
            "checked_kind",
            "checked_name",
            "checked_labels",
        )
    )


# Compiled once per connection: building this queryset costs several times what running it does.
_COVERING_BY_ID = Statement(
    lambda user_id, at, resource_id: _covering_latest(
        user_id=user_id, at=at, resources=Resource.objects.filter(pk=resource_id)
    ),
    user_id=int,
    at=datetime,
    resource_id=int,
)
_COVERING_BY_NAME = Statement(
    lambda user_id, at, kind, name: _covering_latest(
        user_id=user_id, at=at, resources=Resource.objects.filter(kind=kind, name=name)
    ),
    user_id=int,
    at=datetime,
    kind=str,
    name=str,
)


def _loaded(model, values: dict):
    """An instance of ``model`` holding ``values`` (by attname), as if loaded; other fields load on access."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db("default", names, [values[name] for name in names])


def access_check(
    *, user, resource: Resource | str | int | None, login: str | None = None, at: datetime | None = None
) -> AccessDecision:
    """Decide from timestamps, now: an ended grant denies even if no sweep ran.

    ``resource`` is a resource or a reference to one (an id or ``kind/name``;
    a malformed one is a DomainError naming ``resource``). Whether a grant
    still counts is ``grant_refusal``. One statement, compiled once per
    connection, reading a row per role however many grants the user holds:
    per role, the user's latest active grant that could cover the resource,
    with whether the user may still request the role, and the resource.
    Among the roles that match the resource, the answer is the latest-ending
    grant of a role that allows the check, or the refusal of the most
    telling one.
    """
    at = at or timezone.now()
    if not user.is_active:
        return AccessDecision(False, reason="the user is not active", code=Decision.USER_INACTIVE)
    lookup = {"pk": resource.pk} if isinstance(resource, Resource) else resource_lookup(resource)
    if lookup is None:  # no such resource: answered as one without a grant, not to reveal which exist
        return AccessDecision(False, reason=NO_GRANT, code=Decision.NO_GRANT)
    if "pk" in lookup:
        rows = _COVERING_BY_ID.rows(user_id=user.pk, at=at, resource_id=lookup["pk"])
    else:
        rows = _COVERING_BY_NAME.rows(user_id=user.pk, at=at, kind=lookup["kind"], name=lookup["name"])
    if not rows or rows[0]["checked_id"] is None:
        return AccessDecision(False, reason=NO_GRANT, code=Decision.NO_GRANT)
    first = rows[0]
    checked = _loaded(
        Resource,
        {
            "id": first["checked_id"],
            "kind": first["checked_kind"],
            "name": first["checked_name"],
            "labels": first["checked_labels"],
        },
    )
    grants: dict[int, Grant] = {}  # by role: the one grant to answer with
    eligible: set[int] = set()
    for row in rows:
        role = _loaded(
            Role,
            {
                "id": row["role_id"],
                "name": row["role__name"],
                "logins": row["role__logins"],
                "resource_kinds": row["role__resource_kinds"],
                "resource_labels": row["role__resource_labels"],
            },
        )
        # A grant covers the resource only while its role matches it (a relabelled resource drops out).
        if role.pk in grants or not role.matches(checked):
            continue
        grant = _loaded(
            Grant,
            {name: row[name] for name in ("id", "role_id", "resource_id", "starts_at", "expires_at", "revoked_at")},
        )
        grant.user, grant.role = user, role
        grant.resource = checked if grant.resource_id is not None else None
        grants[role.pk] = grant
        if row["eligible"]:
            eligible.add(role.pk)

    def latest(role_ids: list[int]) -> Grant | None:
        return max((grants[pk] for pk in role_ids), key=lambda g: g.expires_at, default=None)

    allowing = [pk for pk in eligible if login is None or login in grants[pk].role.logins]
    grant = latest(allowing)
    if grant is not None and grant_refusal(grant, at=at, eligible_role_ids=eligible) is None:
        return AccessDecision(True, grant=grant)
    grant = latest([pk for pk in grants if pk not in eligible])
    refusal = grant_refusal(grant, at=at, eligible_role_ids=eligible) if grant is not None else None
    if refusal is not None:
        return AccessDecision(False, reason=refusal, code=Decision.NOT_HONOURED)
    refusing = sorted(grants[pk].role.name for pk in eligible)
    if refusing and login is not None:
        reason = f"login {login!r} is not allowed by role {refusing[0]}"
        return AccessDecision(False, reason=reason, code=Decision.LOGIN_NOT_ALLOWED)
    return AccessDecision(False, reason=NO_GRANT, code=Decision.NO_GRANT)
