"""Break-glass: approval at once and the review afterwards."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record, audit_record_many
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from requests_app.models import AccessRequest
from requests_app.notifications.messages import Event
from requests_app.notifications.outbox import notify, notify_many
from requests_app.services._common import (
    _approve,
    _clean_reason,
    _grants_end,
    _lock_with_chain,
    _Refusal,
    _request_audit_data,
)
from requests_app.services.review import reviewer_is_eligible

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
