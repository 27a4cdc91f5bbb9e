"""Reads for the portal pages and the review queue.

Every list here costs a fixed number of queries whatever its length: counts are
annotated, related rows prefetched, and a request's resources (up to 300) are
cut to the first few plus a count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, IntegerField, Min, OuterRef, Prefetch, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts import capabilities
from accounts.models import Role
from accounts.selectors import resources_searchable_by, reviewers_of, roles_requestable_by
from inventory.models import Resource
from inventory.selectors import resources_resolve
from jitportal.errors import DomainError
from requests_app.models import AccessRequest, AccessRequestQuerySet, Grant, Review
from requests_app.preview import RequestPreview, request_preview, resource_count_check

RESOURCES_SHOWN = 3


def requests_summarised(queryset: AccessRequestQuerySet) -> AccessRequestQuerySet:
    """Adds approval/denial counts, roles, the requester and the first few resources (``first_resources``)."""
    through = AccessRequest.resources.through
    resource_count = (
        through.objects.filter(accessrequest_id=OuterRef("pk"))
        .order_by()
        .values("accessrequest_id")
        .annotate(n=Count("pk"))
        # django-stubs does not see annotations made on the auto-created through model.
        .values("n")  # type: ignore[misc]
    )
    return (
        queryset.with_counts()
        .annotate(resource_count=Subquery(resource_count, output_field=IntegerField()))
        .select_related("requester")
        .prefetch_related(
            "roles",
            Prefetch(
                "resources",
                queryset=Resource.objects.order_by("kind", "name")[:RESOURCES_SHOWN],
                to_attr="first_resources",
            ),
        )
    )


def requests_awaiting_review(
    *, user, at: datetime, queryset: AccessRequestQuerySet | None = None
) -> AccessRequestQuerySet:
    """The admin queue, its count on the index and the dashboard banner (``awaiting_review_by``).

    ``queryset`` narrows rows already chosen (the admin's visible requests) in the same query.
    """
    return (AccessRequest.objects.all() if queryset is None else queryset).awaiting_review_by(user, at=at)


# --- dashboard and lists --------------------------------------------------------


@dataclass
class Dashboard:
    grants: list[Grant]
    pending: list[AccessRequest]
    more_pending: bool
    recent: list[AccessRequest]
    awaiting_review: int | None


DASHBOARD_PENDING = 20
DASHBOARD_RECENT = 5


def dashboard_for(*, user, at: datetime) -> Dashboard:
    """Live grants (active or scheduled), pending requests and the latest decisions of ``user``."""
    grants = list(
        Grant.objects.honoured(at=at, include_scheduled=True)
        .filter(user=user)
        .select_related("role", "resource")
        .order_by("expires_at", "pk")
    )
    mine = AccessRequest.objects.filter(requester=user)
    pending_now = mine.in_state(AccessRequest.State.PENDING, at=at)
    pending = list(requests_summarised(pending_now).order_by("-created_at")[: DASHBOARD_PENDING + 1])
    # An expiry no sweep has recorded yet sorts by the moment it happened.
    resolved = Coalesce("resolved_at", "pending_expires_at")
    recent = list(
        requests_summarised(mine.exclude(pk__in=pending_now.values("pk"))).order_by(resolved.desc(), "-created_at")[
            :DASHBOARD_RECENT
        ]
    )
    awaiting = requests_awaiting_review(user=user, at=at).count() if capabilities.may_review_queue(user) else None
    return Dashboard(
        grants=grants,
        pending=pending[:DASHBOARD_PENDING],
        more_pending=len(pending) > DASHBOARD_PENDING,
        recent=recent,
        awaiting_review=awaiting,
    )


def requests_of(*, user, state: str | None = None, at: datetime | None = None) -> AccessRequestQuerySet:
    queryset = AccessRequest.objects.filter(requester=user)
    if state:
        queryset = queryset.in_state(state, at=at or timezone.now())
    return requests_summarised(queryset).order_by("-created_at")


def request_detail_get(*, user, pk) -> AccessRequest | None:
    """One request with everything its page shows, or None when ``user`` may not see it."""
    return (
        AccessRequest.objects.visible_to(user)
        .filter(pk=pk)
        .with_counts()
        .select_related("requester", "post_reviewed_by")
        .prefetch_related(
            "roles",
            "resources",
            "suggested_reviewers",
            Prefetch("reviews", queryset=Review.objects.select_related("reviewer").order_by("created_at")),
            Prefetch("grants", queryset=Grant.objects.select_related("role", "resource", "revoked_by").order_by("pk")),
        )
        .first()
    )


# --- reviewers -------------------------------------------------------------------


def reviewers_eligible_for(*, roles: list[Role], exclude=None) -> list:
    """Who may review a request for ``roles`` (``reviewers_of``), by username."""
    queryset = reviewers_of(roles)
    if exclude is not None:
        queryset = queryset.exclude(pk=exclude.pk)
    return list(queryset.order_by("username"))


@dataclass
class ReviewSummary:
    at: datetime
    awaiting: int | None  # None: the user has no review queue
    oldest_at: datetime | None
    active_grants: int | None  # None: the user may not read every grant

    @property
    def oldest_age(self) -> timedelta | None:
        return self.at - self.oldest_at if self.oldest_at else None


def review_summary(*, user, at: datetime) -> ReviewSummary:
    """What the admin index shows: my queue (for reviewers) and grants active now."""
    awaiting = oldest = None
    if capabilities.may_review_queue(user):
        numbers = requests_awaiting_review(user=user, at=at).aggregate(n=Count("pk"), oldest=Min("created_at"))
        awaiting, oldest = numbers["n"], numbers["oldest"]
    active = Grant.objects.active(at=at).count() if capabilities.may_read_all_grants(user) else None
    return ReviewSummary(at=at, awaiting=awaiting, oldest_at=oldest, active_grants=active)


# --- what a new request would be ------------------------------------------------------


def request_selection(*, user, resource_refs: list[str], role_name: str = "") -> RequestPreview:
    """Resolve the form's query string into the ``request_preview`` it offers; a ``DomainError`` says why
    nothing can be requested.

    The requester may still choose among the roles that fit a resource; the
    service previews the request again, with the roles chosen, on submit.
    """
    requestable = roles_requestable_by(user)
    if role_name:
        role = next((r for r in requestable if r.name == role_name), None)
        if role is None:  # as for a role that does not exist: the page must not reveal which do
            raise DomainError(f"no such role: {role_name}", field="roles")
        return request_preview(requestable=requestable, roles=[role])
    refs = list(dict.fromkeys(ref.strip() for ref in resource_refs if ref.strip()))
    if not refs:
        raise DomainError("choose at least one resource or role", field="resources")
    # Counted before resolving: a long query string costs nothing.
    resource_count_check(len(refs))
    # Only what the user may search: a hidden resource is answered as a missing one.
    resources = resources_resolve(refs, queryset=resources_searchable_by(user, roles=requestable))
    return request_preview(requestable=requestable, resources=resources, allow_choice=True)
