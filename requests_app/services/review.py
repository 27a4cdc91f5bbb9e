"""Reviewing a request: who may review, the refusals, and ``request_review``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.db import transaction
from django.db.models import Count, Exists, Min, OuterRef, Q, prefetch_related_objects
from django.utils import timezone

from accounts.mfa import mfa_fresh
from accounts.models import Role
from accounts.selectors import reviewers_of
from audit.services import audit_record
from jitportal.durations import format_duration, parse_duration
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from requests_app.models import AccessRequest, Review
from requests_app.notifications.messages import Event
from requests_app.notifications.outbox import notify
from requests_app.services._common import (
    _approve,
    _chain_live_ends,
    _clean_reason,
    _expire_if_due,
    _expired_conflict,
    _lock_with_chain,
    _nothing_to_extend,
    _Refusal,
    _resolve,
)

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
