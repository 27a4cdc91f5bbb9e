"""Access requests, their reviews and the grants they become."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Count, F, Q
from django.utils import timezone

from accounts.capabilities import may_audit, may_read_all_grants
from accounts.models import Role
from inventory.models import Resource

MAX_REASON_LENGTH = 4096


class AccessRequestQuerySet(models.QuerySet):
    def visible_to(self, user) -> AccessRequestQuerySet:
        """Own requests, those the user may review, everything for holders of ``audit``."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if may_audit(user):
            return self
        return self.filter(Q(requester=user) | Q(pk__in=self.reviewable_by(user).values("pk")))

    def reviewable_by(self, user) -> AccessRequestQuerySet:
        """Requests where ``user`` is eligible for every role, never their own."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        reviewable = Role.objects.reviewable_by(user).values("pk")
        return (
            self.exclude(requester=user)
            .filter(roles__isnull=False)
            .exclude(roles__in=Role.objects.exclude(pk__in=reviewable))
            .distinct()
        )

    def with_counts(self) -> AccessRequestQuerySet:
        return self.annotate(
            approval_count=Count("reviews", filter=Q(reviews__decision="approve"), distinct=True),
            denial_count=Count("reviews", filter=Q(reviews__decision="deny"), distinct=True),
        )

    def due_for_expiry(self, *, at: datetime) -> AccessRequestQuerySet:
        return self.filter(state=AccessRequest.State.PENDING, pending_expires_at__lte=at)


class AccessRequest(models.Model):
    """A person's ask for roles (and optionally specific resources) for a while."""

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        CANCELLED = "cancelled"
        EXPIRED = "expired"
        REVOKED = "revoked"

    FINAL_STATES = {State.DENIED, State.CANCELLED, State.EXPIRED, State.REVOKED}

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="access_requests")
    roles = models.ManyToManyField(Role, related_name="access_requests")
    resources = models.ManyToManyField(Resource, related_name="access_requests", blank=True)
    reason = models.TextField(blank=True, max_length=MAX_REASON_LENGTH)
    duration = models.DurationField()
    start_time = models.DateTimeField(null=True, blank=True)
    suggested_reviewers = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="suggested_reviews", blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    # Thresholds are fixed when the request is made, from its roles, so a
    # later policy change never flips a request already under review.
    approvals_required = models.PositiveSmallIntegerField(default=1)
    denials_required = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    pending_expires_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_reason = models.TextField(blank=True)

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
        ]
        indexes = [
            models.Index(fields=["requester", "-created_at"], name="request_requester_idx"),
            models.Index(fields=["state", "pending_expires_at"], name="request_state_expiry_idx"),
            models.Index(fields=["state", "-created_at"], name="request_state_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.requester} {self.state} {self.id}"

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES

    @property
    def is_role_based(self) -> bool:
        return not self.resources.exists()


class Review(models.Model):
    """One reviewer's decision on one request."""

    class Decision(models.TextChoices):
        APPROVE = "approve"
        DENY = "deny"

    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    reason = models.TextField(blank=True, max_length=MAX_REASON_LENGTH)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "reviewer"], name="review_once_per_reviewer"),
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

    def active(self, *, at: datetime) -> GrantQuerySet:
        return self.filter(starts_at__lte=at, expires_at__gt=at, revoked_at__isnull=True)


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
        target = self.resource.ref if self.resource_id else f"role {self.role}"
        return f"{self.user} → {target}"

    def state_at(self, at: datetime) -> str:
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

    def covers(self, resource: Resource) -> bool:
        if self.resource_id is not None:
            return self.resource_id == resource.pk
        return self.role.matches(resource)
