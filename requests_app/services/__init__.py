"""The request lifecycle: one function per transition.

Each transition runs in one transaction that locks the request row, checks
the current state, changes it, writes the audit event and queues side effects
with ``transaction.on_commit``. Views, the admin, the API, the CLI and tasks
all call these functions, so every rule exists once.
"""

from __future__ import annotations

from requests_app.services._common import CLOCK_SKEW, PENDING_TTL_PASSED
from requests_app.services.access import NO_GRANT, AccessDecision, Decision, access_check
from requests_app.services.break_glass import (
    BREAK_GLASS_RESOLUTION,
    PostReviewDecision,
    request_post_review,
    requests_announce_post_review,
)
from requests_app.services.create import request_create
from requests_app.services.ending import (
    DROPPED,
    grant_drop,
    grant_revoke,
    grants_end_expired,
    grants_remind_expiring,
    request_cancel,
    request_drop,
    request_expire_pending,
)
from requests_app.services.extend import extension_offer, extension_refusal, extensions_used, request_extend
from requests_app.services.review import (
    MFA_REQUIRED_MESSAGE,
    ReviewRefusal,
    request_review,
    requester_refusal,
    review_refusal,
    review_refusals,
    reviewer_is_eligible,
)

__all__ = [
    "BREAK_GLASS_RESOLUTION",
    "CLOCK_SKEW",
    "DROPPED",
    "MFA_REQUIRED_MESSAGE",
    "NO_GRANT",
    "PENDING_TTL_PASSED",
    "AccessDecision",
    "Decision",
    "PostReviewDecision",
    "ReviewRefusal",
    "access_check",
    "extension_offer",
    "extension_refusal",
    "extensions_used",
    "grant_drop",
    "grant_revoke",
    "grants_end_expired",
    "grants_remind_expiring",
    "request_cancel",
    "request_create",
    "request_drop",
    "request_expire_pending",
    "request_extend",
    "request_post_review",
    "request_review",
    "requester_refusal",
    "requests_announce_post_review",
    "review_refusal",
    "review_refusals",
    "reviewer_is_eligible",
]
