"""People, groups and the pre-authorized roles they may request."""

from __future__ import annotations

import re
from datetime import timedelta

from django.contrib.auth.models import AbstractUser, Group
from django.db import models
from django.db.models import Q
from knox.models import AbstractAuthToken

from inventory.models import Resource, selector_matches, selector_q
from jitportal.crypto import EncryptedTextField

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

    # The identity provider's own id for this person (SCIM ``externalId``): it survives a
    # change of username at the provider. Empty for people the provider does not manage.
    external_id = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["username"]
        # Capabilities are permissions (accounts.audit, ...), held by groups or single users.
        permissions = [(capability.value, capability.label) for capability in Capability]
        constraints = [
            models.UniqueConstraint(
                fields=["external_id"], condition=~Q(external_id=""), name="user_external_id_unique"
            ),
        ]


class OidcIdentity(models.Model):
    """The identity provider's account (issuer and subject) a user signs in as.

    Bound at the first OIDC sign-in; afterwards a different subject claiming
    the same username is refused, so a renamed or reused name at the
    provider cannot take over someone else's account.
    """

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="oidc_identity")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "OIDC identity"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_unique_subject")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


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
    # A regular expression the whole reason must match (e.g. a ticket reference); blank: any reason.
    reason_pattern = models.CharField(max_length=500, blank=True)
    # How many extensions one approved request may have (pending and approved ones count); 0 forbids extending.
    max_extensions = models.PositiveSmallIntegerField(default=1)
    auto_approve = models.BooleanField(default=False)
    # Emergency access: approved at once (a reason always required) and reviewed afterwards.
    break_glass = models.BooleanField(default=False)
    pending_ttl = models.DurationField(default=timedelta(hours=24))
    # Extensions of the SSH certificates issued for this role's grants.
    ssh_permit_pty = models.BooleanField(default=True)
    ssh_permit_port_forwarding = models.BooleanField(default=False)
    ssh_permit_agent_forwarding = models.BooleanField(default=False)
    # Every review of a request for this role needs a second factor verified in the last 15 minutes.
    review_requires_mfa = models.BooleanField(default=False)
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

    def reason_matches(self, reason: str) -> bool:
        """The whole reason matches ``reason_pattern`` (any reason does when there is none)."""
        return not self.reason_pattern or re.fullmatch(self.reason_pattern, reason) is not None

    def matches(self, resource: Resource) -> bool:
        return resource.matches(self.resource_kinds, self.resource_labels)

    def matches_row(self, kind: str, labels: dict[str, str]) -> bool:
        """``matches`` for a resource read as plain values."""
        return selector_matches(kind, labels, self.resource_kinds, self.resource_labels)

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
    # When the session that made this token last verified a second factor; the
    # token reviews roles with review_requires_mfa only while that is fresh.
    mfa_verified_at = models.DateTimeField(
        null=True, blank=True, help_text="When the session that made it verified a second factor, if it had."
    )

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


class TotpDevice(models.Model):
    """A user's TOTP authenticator (RFC 6238): counts once a code from it has confirmed it.

    The secret is encrypted at rest and shown only while the device is being
    set up. ``last_step`` is the time step of the last accepted code, so a
    code is never accepted twice; the failure fields throttle guessing.
    """

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="totp_device")
    secret = EncryptedTextField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_step = models.BigIntegerField(null=True, blank=True)
    failures = models.PositiveSmallIntegerField(default=0)
    first_failure_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "TOTP device"

    def __str__(self) -> str:
        return f"TOTP of {self.user_id}"

    @property
    def confirmed(self) -> bool:
        return self.confirmed_at is not None


class WebAuthnCredential(models.Model):
    """A passkey or security key registered by a user (WebAuthn), with its signature counter."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="webauthn_credentials")
    name = models.CharField(max_length=100, blank=True)
    # base64url of the raw credential id, as the browser names it.
    credential_id = models.CharField(max_length=1400, unique=True)
    public_key = models.BinaryField()
    sign_count = models.PositiveBigIntegerField(default=0)
    transports = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name = "WebAuthn credential"

    def __str__(self) -> str:
        return self.name or f"passkey {self.pk}"
