from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Role
from inventory.api.serializers import ResourceSerializer
from jitportal.api import InputSerializer


@extend_schema_field({"type": "integer", "description": "seconds"})
class DurationSecondsField(serializers.Field):
    """A timedelta shown as whole seconds, the API's unit for durations."""

    def to_representation(self, value):
        return int(value.total_seconds())


class RoleSerializer(serializers.ModelSerializer):
    max_duration = DurationSecondsField()
    pending_ttl = DurationSecondsField()
    reviewers = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Role
        fields = [
            "id",
            "name",
            "description",
            "resource_kinds",
            "resource_labels",
            "logins",
            "max_duration",
            "approvals",
            "denials",
            "reason",
            "reason_hint",
            "reason_pattern",
            "max_extensions",
            "auto_approve",
            "review_requires_mfa",
            "pending_ttl",
            "reviewers",
        ]


class SearchResultSerializer(ResourceSerializer):
    requestable_roles = serializers.SerializerMethodField()

    class Meta(ResourceSerializer.Meta):
        fields = [*ResourceSerializer.Meta.fields, "requestable_roles"]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_requestable_roles(self, resource) -> list[str]:
        return [role.name for role in self.context["roles"] if role.matches(resource)]


class TokenRequestSerializer(InputSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)
    username = serializers.CharField()


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    email = serializers.CharField()
    is_staff = serializers.BooleanField()
    groups = serializers.ListField(child=serializers.CharField())
    capabilities = serializers.ListField(
        child=serializers.CharField(), help_text="audit, revoke, check_access, manage_oncall, scim: those held"
    )
    token_expires_at = serializers.DateTimeField(
        allow_null=True, help_text="when the API token of this call expires; null when signed in by session"
    )
