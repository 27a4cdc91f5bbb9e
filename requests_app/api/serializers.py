from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.api.serializers import DurationSecondsField
from audit.models import AuditCheckpoint, AuditEvent
from inventory.api.serializers import ResourceRefSerializer
from jitportal.api import InputSerializer
from jitportal.fields import DateTimeField
from requests_app.models import MAX_REASON_LENGTH, AccessRequest, Grant, Review
from requests_app.preview import resource_count_check
from requests_app.services import Decision


class ReviewSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.username", read_only=True)
    duration = DurationSecondsField(read_only=True, allow_null=True, help_text="the shorter access an approval allowed")

    class Meta:
        model = Review
        fields = ["reviewer", "decision", "reason", "duration", "created_at"]


class GrantSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    role = serializers.CharField(source="role.name", read_only=True)
    logins = serializers.ListField(source="role.logins", child=serializers.CharField(), read_only=True)
    resource = ResourceRefSerializer(read_only=True, allow_null=True)
    request = serializers.UUIDField(source="request_id", read_only=True)
    revoked_by = serializers.CharField(source="revoked_by.username", read_only=True, allow_null=True, default=None)
    state = serializers.SerializerMethodField()

    class Meta:
        model = Grant
        fields = [
            "id",
            "request",
            "user",
            "role",
            "logins",
            "resource",
            "state",
            "starts_at",
            "expires_at",
            "revoked_at",
            "revoked_by",
            "revoke_reason",
        ]

    @extend_schema_field(serializers.ChoiceField(choices=Grant.State.choices))
    def get_state(self, grant) -> str:
        return grant.state_at(self.context.get("now") or timezone.now())


class AccessRequestSerializer(serializers.ModelSerializer):
    requester = serializers.CharField(source="requester.username", read_only=True)
    roles = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    resources = ResourceRefSerializer(many=True, read_only=True)
    suggested_reviewers = serializers.SlugRelatedField(slug_field="username", many=True, read_only=True)
    duration = DurationSecondsField(read_only=True)
    approvals = serializers.SerializerMethodField()
    denials = serializers.SerializerMethodField()
    reviews = ReviewSerializer(many=True, read_only=True)
    grants = GrantSerializer(many=True, read_only=True)
    extends = serializers.UUIDField(source="extends_id", read_only=True, allow_null=True)
    # Derived from the timestamps: a request past its time to live reads expired before any sweep ran.
    state = serializers.SerializerMethodField()
    resolved_at = serializers.SerializerMethodField()
    resolution_reason = serializers.SerializerMethodField()
    post_reviewed_by = serializers.CharField(
        source="post_reviewed_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = AccessRequest
        fields = [
            "id",
            "requester",
            "state",
            "extends",
            "roles",
            "resources",
            "reason",
            "duration",
            "start_time",
            "suggested_reviewers",
            "approvals_required",
            "approvals",
            "denials_required",
            "denials",
            "created_at",
            "pending_expires_at",
            "resolved_at",
            "resolution_reason",
            "break_glass",
            "post_review",
            "post_reviewed_by",
            "post_reviewed_at",
            "post_review_reason",
            "reviews",
            "grants",
        ]
        read_only_fields = fields

    def _now(self):
        return self.context.setdefault("now", timezone.now())

    @extend_schema_field(serializers.ChoiceField(choices=AccessRequest.State.choices))
    def get_state(self, obj) -> str:
        return obj.state_at(self._now())

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_resolved_at(self, obj):
        resolved_at = obj.resolution_at(self._now())[0]
        return serializers.DateTimeField().to_representation(resolved_at) if resolved_at else None

    def get_resolution_reason(self, obj) -> str:
        return obj.resolution_at(self._now())[1]

    def _count(self, obj, decision: str) -> int:
        # Counted from the prefetched reviews: no query per row.
        return sum(1 for review in obj.reviews.all() if review.decision == decision)

    def get_approvals(self, obj) -> int:
        return self._count(obj, Review.Decision.APPROVE)

    def get_denials(self, obj) -> int:
        return self._count(obj, Review.Decision.DENY)


class AccessRequestCreateSerializer(InputSerializer):
    """Shape only: the rules are the service's."""

    def validate_resources(self, value: list) -> list:
        # Bounded before any lookup (each kind/name becomes one OR term of a query), by the preview's own rule.
        resource_count_check(len(value))
        return value

    resources = serializers.ListField(
        child=serializers.JSONField(), required=False, default=list, help_text="ids or kind/name"
    )
    roles = serializers.ListField(child=serializers.CharField(max_length=100), required=False, default=list)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=MAX_REASON_LENGTH)
    duration = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="seconds, or a Go-style string such as 90m or 1h30m; null or absent for the default",
    )
    start_time = DateTimeField(required=False, allow_null=True, default=None)
    suggested_reviewers = serializers.ListField(
        child=serializers.CharField(max_length=150), required=False, default=list
    )


class ReviewCreateSerializer(InputSerializer):
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=MAX_REASON_LENGTH)
    duration = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="approvals only: a shorter access than requested (seconds or e.g. 30m)",
    )


class ExtendSerializer(InputSerializer):
    duration = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="how much longer: seconds, or a Go-style string such as 30m; absent for the default",
    )
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=MAX_REASON_LENGTH)


class PostReviewSerializer(InputSerializer):
    decision = serializers.ChoiceField(choices=["ratify", "reject"])
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=MAX_REASON_LENGTH)


class ReasonSerializer(InputSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=MAX_REASON_LENGTH)


class AccessCheckSerializer(serializers.Serializer):
    allowed = serializers.BooleanField()
    grant = serializers.IntegerField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    code = serializers.ChoiceField(
        choices=[code.value for code in Decision],
        help_text="why, for machines: branch on this, not on reason",
    )


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_username", read_only=True)
    sealed = serializers.BooleanField(read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "seq",
            "sealed",
            "created_at",
            "actor",
            "action",
            "target_type",
            "target_id",
            "data",
            "prev_mac",
            "mac",
        ]


class AuditCheckpointSerializer(serializers.ModelSerializer):
    checkpoint = serializers.IntegerField(source="id", read_only=True)

    class Meta:
        model = AuditCheckpoint
        fields = [
            "checkpoint",
            "seq",
            "mac",
            "at",
            "key",
            "written",
            "verified_at",
            "ok",
            "problem",
            "first_bad_seq",
            "checked",
            "checkpoints_checked",
            "unsealed",
            "oldest_unsealed_at",
            "webhook_error",
        ]
