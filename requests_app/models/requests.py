"""Access requests, their reviews and the grants they become."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from accounts.capabilities import may_audit, may_read_all_grants
from accounts.models import Role
from inventory.models import Resource

MAX_REASON_LENGTH = 4096


def _reviewable_q(user) -> Q:
    """``user`` reviews every role of the request (and it has one): two correlated EXISTS.

    Written as semi-joins on the request's own role rows rather than an IN over
    every reviewable request, so the planner probes indexes per row (or stops
    at the first page) on both backends, and no DISTINCT is needed.
    """
    through = AccessRequest.roles.through
    reviews_role = Exists(Role.reviewers.through.objects.filter(role_id=OuterRef("role_id"), group__user=user))
    own_roles = through.objects.filter(accessrequest_id=OuterRef("pk"))
    return Q(Exists(own_roles)) & ~Q(Exists(own_roles.exclude(reviews_role)))


class AccessRequestQuerySet(models.QuerySet):
    def visible_to(self, user) -> AccessRequestQuerySet:
        """Own requests, those the user may review, everything for holders of ``audit``."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if may_audit(user):
            return self
        return self.filter(Q(requester=user) | _reviewable_q(user))

    def reviewable_by(self, user) -> AccessRequestQuerySet:
        """Requests where ``user`` is eligible for every role, never their own."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.exclude(requester=user).filter(_reviewable_q(user))

    def awaiting_review_by(self, user, *, at: datetime) -> AccessRequestQuerySet:
        """What "awaiting my review" means everywhere: pending and still within its time to live,
        ``user`` may review it, and has not reviewed it yet."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        reviewed = Review.objects.filter(request_id=OuterRef("pk"), reviewer=user)
        return self.in_state(AccessRequest.State.PENDING, at=at).reviewable_by(user).exclude(Exists(reviewed))

    def with_counts(self) -> AccessRequestQuerySet:
        return self.annotate(
            approval_count=Count("reviews", filter=Q(reviews__decision="approve"), distinct=True),
            denial_count=Count("reviews", filter=Q(reviews__decision="deny"), distinct=True),
        )

    def due_for_expiry(self, *, at: datetime) -> AccessRequestQuerySet:
        return self.filter(state=AccessRequest.State.PENDING, pending_expires_at__lte=at)

    def in_state(self, state: str, *, at: datetime) -> AccessRequestQuerySet:
        """Requests whose state at ``at`` is ``state``, as ``AccessRequest.state_at`` derives it.

        A pending request past its time to live is expired whether or not the
        sweep has recorded it yet.
        """
        pending = AccessRequest.State.PENDING
        if state == pending:
            return self.filter(state=pending, pending_expires_at__gt=at)
        if state == AccessRequest.State.EXPIRED:
            return self.filter(Q(state=state) | Q(state=pending, pending_expires_at__lte=at))
        return self.filter(state=state)


class AccessRequest(models.Model):
    """A person's ask for roles (and optionally specific resources) for a while."""

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        CANCELLED = "cancelled"
        EXPIRED = "expired"
        REVOKED = "revoked"

    class PostReview(models.TextChoices):
        PENDING = "pending"
        RATIFIED = "ratified"
        REJECTED = "rejected"

    FINAL_STATES = {State.DENIED, State.CANCELLED, State.EXPIRED, State.REVOKED}
    PENDING_TTL_PASSED = "pending time to live passed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="access_requests")
    roles = models.ManyToManyField(Role, related_name="access_requests")
    resources = models.ManyToManyField(Resource, related_name="access_requests", blank=True)
    reason = models.TextField(blank=True, max_length=MAX_REASON_LENGTH)
    duration = models.DurationField()
    start_time = models.DateTimeField(null=True, blank=True)
    suggested_reviewers = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="suggested_reviews", blank=True)
    # The approved request whose access this one extends (always the first of the chain, never an extension).
    extends = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="extensions", editable=False
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    # Thresholds are fixed when the request is made, from its roles, so a
    # later policy change never flips a request already under review.
    approvals_required = models.PositiveSmallIntegerField(default=1)
    denials_required = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    pending_expires_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_reason = models.TextField(blank=True)
    # Fixed when the request is made: every role was break-glass, so it was approved at once
    # and awaits a review after the fact (post_review null for every other request).
    break_glass = models.BooleanField(default=False)
    post_review = models.CharField(max_length=16, choices=PostReview.choices, null=True, blank=True)
    post_reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    post_reviewed_at = models.DateTimeField(null=True, blank=True)
    post_review_reason = models.TextField(blank=True)
    # When the pending post-review was last announced; the daily sweep announces it again a day later.
    post_review_announced_at = models.DateTimeField(null=True, blank=True)

    objects = AccessRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(duration__gt=timedelta(0)), name="request_duration_positive"),
            models.CheckConstraint(condition=Q(approvals_required__gte=1), name="request_approvals_positive"),
            models.CheckConstraint(condition=Q(denials_required__gte=1), name="request_denials_positive"),
            models.CheckConstraint(
                condition=Q(pending_expires_at__gt=F("created_at")), name="request_pending_expiry_after_creation"
            ),
            models.CheckConstraint(
                condition=Q(break_glass=False, post_review__isnull=True)
                | Q(break_glass=True, post_review__isnull=False),
                name="request_post_review_only_break_glass",
            ),
        ]
        indexes = [
            models.Index(fields=["requester", "-created_at"], name="request_requester_idx"),
            models.Index(fields=["state", "pending_expires_at"], name="request_state_expiry_idx"),
            models.Index(fields=["state", "-created_at"], name="request_state_created_idx"),
            models.Index(
                fields=["post_review_announced_at"],
                condition=Q(post_review="pending"),
                name="request_post_review_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.requester} {self.state} {self.id}"

    def state_at(self, at: datetime) -> str:
        """The state at ``at``: a pending request past its time to live reads expired before any sweep."""
        if self.state == self.State.PENDING and self.pending_expires_at <= at:
            return self.State.EXPIRED
        return self.state

    def resolution_at(self, at: datetime) -> tuple[datetime | None, str]:
        """When and why the request was resolved as of ``at``, an expiry not yet recorded included."""
        if self.state != self.State.EXPIRED and self.state_at(at) == self.State.EXPIRED:
            return self.pending_expires_at, self.PENDING_TTL_PASSED
        return self.resolved_at, self.resolution_reason

    def hold(self, **relations: list) -> None:
        """Hold objects already in hand as these relations (``roles=[...]``), as a prefetch would.

        Reading them then costs no query. The caller vouches that they are
        what the rows say: what its own transaction has just written, or
        relations that never change once written.
        """
        cache = self.__dict__.setdefault("_prefetched_objects_cache", {})
        for name, objects in relations.items():
            queryset = getattr(self, name).get_queryset()
            queryset._result_cache = list(objects)
            queryset._prefetch_done = True
            cache[name] = queryset

    @property
    def current_state(self) -> str:
        return self.state_at(timezone.now())

    def get_current_state_display(self) -> str:
        return self.State(self.current_state).label

    @property
    def current_resolved_at(self) -> datetime | None:
        return self.resolution_at(timezone.now())[0]

    @property
    def current_resolution_reason(self) -> str:
        return self.resolution_at(timezone.now())[1]


class Review(models.Model):
    """One reviewer's decision on one request."""

    class Decision(models.TextChoices):
        APPROVE = "approve"
        DENY = "deny"

    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    reason = models.TextField(blank=True, max_length=MAX_REASON_LENGTH)
    # An approval may narrow the access: the grant lasts the shortest of the request's and these.
    duration = models.DurationField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "reviewer"], name="review_once_per_reviewer"),
            models.CheckConstraint(
                condition=Q(duration__isnull=True) | Q(duration__gt=timedelta(0)), name="review_duration_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reviewer} {self.decision}"


class GrantQuerySet(models.QuerySet):
    def visible_to(self, user) -> GrantQuerySet:
        """Own grants; every grant for holders of ``audit`` or ``revoke`` (to end one, one must find it)."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if may_read_all_grants(user):
            return self
        return self.filter(user=user)

    def in_state(self, state: str, *, at: datetime) -> GrantQuerySet:
        """Grants whose state at ``at`` is ``state``, as ``Grant.state_at`` derives it.

        Revocation wins over the window; outside it a grant is scheduled
        (before its start) or expired (from its end on).
        """
        if state == Grant.State.REVOKED:
            return self.filter(revoked_at__isnull=False)
        live = self.filter(revoked_at__isnull=True)
        if state == Grant.State.SCHEDULED:
            return live.filter(starts_at__gt=at)
        if state == Grant.State.EXPIRED:
            return live.filter(expires_at__lte=at)
        if state == Grant.State.ACTIVE:
            return live.filter(starts_at__lte=at, expires_at__gt=at)
        return self.none()

    def active(self, *, at: datetime) -> GrantQuerySet:
        return self.in_state(Grant.State.ACTIVE, at=at)

    def due_to_end(self, *, at: datetime) -> GrantQuerySet:
        """Grants whose end (window closed or revoked) the expiry sweep has yet to record."""
        return self.filter(Q(ended_at__isnull=True) & (Q(expires_at__lte=at) | Q(revoked_at__isnull=False)))

    def due_for_reminder(self, *, at: datetime, before: timedelta) -> GrantQuerySet:
        """Active grants ending within ``before`` and not yet reminded; grants no longer than ``before`` never are,
        nor grants an approved extension already continues (access does not end then)."""
        return (
            self.filter(
                reminded_at__isnull=True,
                ended_at__isnull=True,
                revoked_at__isnull=True,
                starts_at__lte=at,
                expires_at__gt=at,
                expires_at__lte=at + before,
            )
            .filter(expires_at__gt=F("starts_at") + before)
            .exclude(self._continued())
        )

    @staticmethod
    def _continued() -> Q:
        """A grant of the same user, role and resource starts where this one ends (an extension's)."""
        same = Grant.objects.filter(
            user_id=OuterRef("user_id"),
            role_id=OuterRef("role_id"),
            starts_at=OuterRef("expires_at"),
            revoked_at__isnull=True,
        )
        # Two probes: a role-wide grant has no resource to compare, and NULL never equals NULL.
        on_resource = Exists(same.filter(resource_id=OuterRef("resource_id")))
        role_wide = Exists(same.filter(resource__isnull=True))
        return (Q(resource__isnull=False) & Q(on_resource)) | (Q(resource__isnull=True) & Q(role_wide))

    def live(self, *, at: datetime) -> GrantQuerySet:
        """Active or scheduled at ``at``: not revoked and not yet ended."""
        return self.filter(revoked_at__isnull=True, expires_at__gt=at)

    def honoured(self, *, at: datetime, include_scheduled: bool = False) -> GrantQuerySet:
        """Grants the access check honours at ``at``: ``grant_refusal`` is None for exactly these.

        Active, the user active and still in a group that may request the
        role, and for a grant on one resource the role still matching it (a
        role-based grant covers whatever the role matches when asked). Costs
        one query for the roles' selectors. ``include_scheduled`` adds grants
        that start later and would be honoured then as things stand now.
        """
        eligible = Exists(
            Role.requestable_by.through.objects.filter(role_id=OuterRef("role_id"), group__user=OuterRef("user_id"))
        )
        window = self.live(at=at)
        matching = Q(resource__isnull=True)
        for role in Role.objects.only("id", "resource_kinds", "resource_labels"):
            # Correlated on the grant's own resource (a primary-key probe), not an IN over every
            # resource the role matches, which the database would build in full on every call.
            covered = Resource.objects.filter(role.resource_q(), pk=OuterRef("resource_id"))
            matching |= Q(Q(role_id=role.pk), Exists(covered))
        if not include_scheduled:
            window = window.filter(starts_at__lte=at)
        return window.filter(eligible, matching, user__is_active=True)


class Grant(models.Model):
    """Time-boxed access that an approval created: one role, one resource or the role's whole selector."""

    class State(models.TextChoices):
        SCHEDULED = "scheduled"
        ACTIVE = "active"
        EXPIRED = "expired"
        REVOKED = "revoked"

    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="grants")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="grants")
    # Null for a role-based grant, which covers whatever the role matches.
    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, null=True, blank=True, related_name="grants")
    starts_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    revoke_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Set by the expiry sweep once the end has been recorded and announced.
    # Access never depends on it: the check reads expires_at.
    ended_at = models.DateTimeField(null=True, blank=True)
    reminded_at = models.DateTimeField(null=True, blank=True)

    objects = GrantQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(condition=Q(expires_at__gt=F("starts_at")), name="grant_window_ordered"),
        ]
        indexes = [
            models.Index(fields=["user", "expires_at"], name="grant_user_expiry_idx"),
            models.Index(fields=["expires_at"], name="grant_expiry_idx"),
            models.Index(fields=["expires_at"], condition=Q(ended_at__isnull=True), name="grant_unended_expiry_idx"),
        ]

    def __str__(self) -> str:
        target = self.resource.ref if self.resource is not None else f"role {self.role}"
        return f"{self.user} → {target}"

    def state_at(self, at: datetime) -> str:
        """The state at ``at``, for one grant; ``GrantQuerySet.in_state`` is the same rule as a filter."""
        if self.revoked_at is not None:
            return self.State.REVOKED
        if at < self.starts_at:
            return self.State.SCHEDULED
        if at >= self.expires_at:
            return self.State.EXPIRED
        return self.State.ACTIVE

    def is_active(self, at: datetime) -> bool:
        return self.state_at(at) == self.State.ACTIVE

    @property
    def state(self) -> str:
        return self.state_at(timezone.now())


def grant_refusal(grant: Grant, *, at: datetime, eligible_role_ids: set[int] | None = None) -> str | None:
    """Why the access check does not honour ``grant`` at ``at``, or None when it does.

    The same rule as ``GrantQuerySet.honoured``, for one grant. A caller
    asking about several grants of one user passes the ids of the roles that
    user may request (``Role.objects.requestable_by``), saving a query each.
    """
    state = grant.state_at(at)
    if state == Grant.State.REVOKED:
        return f"the grant was revoked at {grant.revoked_at:%Y-%m-%d %H:%M:%S %Z}; request access again"
    if state == Grant.State.EXPIRED:
        return f"the grant ended at {grant.expires_at:%Y-%m-%d %H:%M:%S %Z}; request access again"
    if state == Grant.State.SCHEDULED:
        return f"the grant starts at {grant.starts_at:%Y-%m-%d %H:%M:%S %Z}"
    role = grant.role
    if not grant.user.is_active:
        return f"{grant.user.username}'s account is not active"
    if eligible_role_ids is None:
        eligible = Role.objects.requestable_by(grant.user).filter(pk=role.pk).exists()
    else:
        eligible = role.pk in eligible_role_ids
    if not eligible:
        return f"{grant.user.username} is no longer eligible for role {role.name}"
    resource = grant.resource
    if resource is not None and not role.matches(resource):
        return f"role {role.name} no longer grants access to {resource.ref}"
    return None
