"""Reads for the portal pages and the review queue.

Every list here costs a fixed number of queries whatever its length: counts are
annotated, related rows prefetched, and a request's resources (up to 300) are
cut to the first few plus a count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, IntegerField, Min, OuterRef, Prefetch, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts import capabilities
from accounts.models import Role
from accounts.selectors import resources_searchable_by, reviewers_of, roles_matching, roles_requestable_by
from inventory.models import Resource
from inventory.selectors import resources_resolve
from jitportal.errors import DomainError
from requests_app.models import AccessRequest, AccessRequestQuerySet, Grant, Review

RESOURCES_SHOWN = 3


def requests_summarised(queryset: AccessRequestQuerySet) -> AccessRequestQuerySet:
    """Adds approval/denial counts, roles, the requester and the first few resources (``first_resources``)."""
    through = AccessRequest.resources.through
    resource_count = (
        through.objects.filter(accessrequest_id=OuterRef("pk"))
        .order_by()
        .values("accessrequest_id")
        .annotate(n=Count("pk"))
        .values("n")
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


def requests_awaiting_review(*, user, at: datetime) -> AccessRequestQuerySet:
    """The admin queue, its count on the index and the dashboard banner (``awaiting_review_by``)."""
    return AccessRequest.objects.awaiting_review_by(user, at=at)


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
        .select_related("requester")
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


@dataclass
class Selection:
    """What the request form is about: resources (each with its candidate roles) or one whole role.

    ``fixed`` are roles that will be used whatever the requester picks (the only
    match for some resource, or the role of a role request); ``choices`` are
    roles the requester must choose among, because several fit some resource.
    """

    resources: list[Resource] = field(default_factory=list)
    role: Role | None = None
    fixed: list[Role] = field(default_factory=list)
    choices: list[Role] = field(default_factory=list)
    matches: dict[int, list[Role]] = field(default_factory=dict)
    error: str = ""

    @property
    def roles(self) -> list[Role]:
        """Every role that may end up in the request, fixed first."""
        return self.fixed + self.choices

    @property
    def ambiguous(self) -> bool:
        return bool(self.choices)

    @property
    def needing_choice(self) -> list[Resource]:
        """Resources that no fixed role reaches: the requester must pick one of their roles."""
        fixed = {r.pk for r in self.fixed}
        return [r for r in self.resources if not fixed & {role.pk for role in self.matches.get(r.pk, [])}]

    @property
    def is_role_request(self) -> bool:
        return self.role is not None


def request_selection(*, user, resource_refs: list[str], role_name: str = "") -> Selection:
    """Resolve the form's query string; ``error`` says why nothing can be requested.

    The service checks all of this again on submit; this only decides what
    the form offers (which role, which durations, which reviewers).
    """
    requestable = roles_requestable_by(user)
    if role_name:
        role = next((r for r in requestable if r.name == role_name), None)
        if role is None:  # as for a role that does not exist: the page must not reveal which do
            return Selection(error=f"no such role: {role_name}")
        return Selection(role=role, fixed=[role])
    refs = list(dict.fromkeys(ref.strip() for ref in resource_refs if ref.strip()))
    if not refs:
        return Selection(error="choose at least one resource or role")
    limit = settings.JITPORTAL_MAX_RESOURCES_PER_REQUEST
    if len(refs) > limit:
        return Selection(error=f"at most {limit} resources per request")
    try:
        # Only what the user may search: a hidden resource is answered as a missing one.
        resources = resources_resolve(refs, queryset=resources_searchable_by(user, roles=requestable))
    except DomainError as exc:
        return Selection(error=exc.message)
    selection = Selection(resources=resources)
    fixed: dict[int, Role] = {}
    choices: dict[int, Role] = {}
    for resource in resources:
        matching = roles_matching(resource, requestable)
        if not matching:
            return Selection(error=f"no such resource: {resource.ref}")  # not searchable after all
        selection.matches[resource.pk] = matching
        if len(matching) == 1:
            fixed[matching[0].pk] = matching[0]
        else:
            choices.update((r.pk, r) for r in matching)
    selection.fixed = sorted(fixed.values(), key=lambda r: r.name)
    # A role that is used anyway (the only fit for another resource) is no choice.
    selection.choices = sorted((r for r in choices.values() if r.pk not in fixed), key=lambda r: r.name)
    return selection
