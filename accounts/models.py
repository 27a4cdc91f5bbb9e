"""People, groups and the pre-authorized roles they may request."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AbstractUser, Group
from django.db import models
from django.db.models import Q
from knox.models import AbstractAuthToken

from inventory.models import Resource, selector_q

MAX_ROLE_DURATION = timedelta(days=14)


class Capability(models.TextChoices):
    """What one may do beyond one's own requests; asked through ``accounts.capabilities``."""

    AUDIT = "audit", "Read every request, grant, review and audit event"
    REVOKE = "revoke", "End any grant early"
    CHECK_ACCESS = "check_access", "Ask the access check and host endpoints about other users"
    MANAGE_ONCALL = "manage_oncall", "Replace on-call schedules"
    SCIM = "scim", "Use the SCIM provisioning endpoints"


class User(AbstractUser):
    """A person. Group membership decides what they may request and review."""

    class Meta:
        ordering = ["username"]
        # Capabilities are permissions (accounts.audit, ...), held by groups or single users.
        permissions = [(capability.value, capability.label) for capability in Capability]


class RoleQuerySet(models.QuerySet):
    def requestable_by(self, user) -> RoleQuerySet:
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(requestable_by__user=user).distinct()

    def reviewable_by(self, user) -> RoleQuerySet:
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(reviewers__user=user).distinct()


class Role(models.Model):
    """A pre-authorized role: what it reaches, who may ask for it, who reviews it."""

    class ReasonMode(models.TextChoices):
        REQUIRED = "required"
        OPTIONAL = "optional"

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    resource_kinds = models.JSONField(default=list, blank=True)
    # key -> list of allowed values, "*" for any value.
    resource_labels = models.JSONField(default=dict, blank=True)
    logins = models.JSONField(default=list, blank=True)
    max_duration = models.DurationField(default=timedelta(hours=1))
    requestable_by = models.ManyToManyField(Group, related_name="requestable_roles", blank=True)
    reviewers = models.ManyToManyField(Group, related_name="reviewable_roles", blank=True)
    approvals = models.PositiveSmallIntegerField(default=1)
    denials = models.PositiveSmallIntegerField(default=1)
    reason = models.CharField(max_length=16, choices=ReasonMode.choices, default=ReasonMode.OPTIONAL)
    reason_hint = models.CharField(max_length=255, blank=True)
    auto_approve = models.BooleanField(default=False)
    # Emergency access: approved at once (a reason always required) and reviewed afterwards.
    break_glass = models.BooleanField(default=False)
    pending_ttl = models.DurationField(default=timedelta(hours=24))
    # Extensions of the SSH certificates issued for this role's grants.
    ssh_permit_pty = models.BooleanField(default=True)
    ssh_permit_port_forwarding = models.BooleanField(default=False)
    ssh_permit_agent_forwarding = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RoleQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_duration__gt=timedelta(0)) & Q(max_duration__lte=MAX_ROLE_DURATION),
                name="role_max_duration_range",
            ),
            models.CheckConstraint(condition=Q(pending_ttl__gt=timedelta(0)), name="role_pending_ttl_positive"),
            models.CheckConstraint(condition=Q(approvals__gte=1), name="role_approvals_positive"),
            models.CheckConstraint(condition=Q(denials__gte=1), name="role_denials_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def reason_required(self) -> bool:
        return self.reason == self.ReasonMode.REQUIRED

    def matches(self, resource: Resource) -> bool:
        return resource.matches(self.resource_kinds, self.resource_labels)

    def resource_q(self) -> Q:
        return selector_q(self.resource_kinds, self.resource_labels)


class ApiToken(AbstractAuthToken):
    """An API token: shown once, stored as a hash, with an expiry.

    Deleting the row (in the admin) revokes it at once.
    """

    name = models.CharField(max_length=100, blank=True)
    # A further restriction on the user's check_access capability: a call made
    # with a token asks about other users only when the token was made with
    # this too (a host agent's token), so people's everyday tokens never can.
    can_check_access = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.token_key}… ({self.user})"


class RoleResource(models.Model):
    """Role ``role`` matches resource ``resource``: the role selectors, worked out ahead of time.

    A requester's search is then an indexed join on the roles they may
    request instead of every role's label tests on every row. Written only by
    ``accounts.scope.role_scope_sync``, which every write of a role's selector
    or a resource's kind or labels reaches; deleting either side deletes the row.
    """

    pk = models.CompositePrimaryKey("role", "resource")
    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="+")
    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="+")

    class Meta:
        indexes = [models.Index(fields=["resource", "role"], name="role_resource_by_resource")]

    def __str__(self) -> str:
        return f"{self.role_id} -> {self.resource_id}"
