"""Requests, reviews, grants and the audit log in the admin: history, read-only.

Nobody adds, edits or deletes these here, superusers included: they change only
through the lifecycle services, which lock, check and audit. Staff (the
auditors) may read all of them.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Prefetch, Q, Subquery
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from inventory.models import Resource
from requests_app.models import AccessRequest, AuditEvent, Grant, Review

RESOURCES_SHOWN = 3


class ReadOnlyAdminMixin:
    """History is not editable: no add, change or delete for anyone; staff may view."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        # Auditors are staff users: they read every request, grant and event.
        return request.user.is_active and request.user.is_staff


class ReadOnlyModelAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


def _short(uuid) -> str:
    return str(uuid)[:8]


def _change_link(obj, text: str):
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text)


# --- access requests -----------------------------------------------------------


class ReviewInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Review
    fields = ("reviewer", "decision", "reason", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("reviewer")


class GrantInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Grant
    fields = ("role", "resource", "starts_at", "expires_at", "state_display", "revoked_at", "revoked_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("role", "resource", "revoked_by")

    @admin.display(description="state")
    def state_display(self, obj: Grant) -> str:
        return obj.state


@admin.register(AccessRequest)
class AccessRequestAdmin(ReadOnlyModelAdmin):
    list_display = (
        "short_id",
        "requester",
        "roles_display",
        "resources_display",
        "state",
        "approvals_display",
        "created_at",
        "pending_expires_at",
    )
    list_filter = ("state", "roles")
    search_fields = ("requester__username", "reason", "resources__name")
    date_hierarchy = "created_at"
    fields = (
        "id",
        "requester",
        "state",
        "roles",
        "resources",
        "reason",
        "duration",
        "start_time",
        "suggested_reviewers",
        "approvals_display",
        "denials_display",
        "created_at",
        "pending_expires_at",
        "resolved_at",
        "resolution_reason",
    )
    readonly_fields = fields
    inlines = (ReviewInline, GrantInline)

    def get_queryset(self, request):
        through = AccessRequest.resources.through
        resource_count = (
            through.objects.filter(accessrequest_id=OuterRef("pk"))
            .order_by()
            .values("accessrequest_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .with_counts()
            .annotate(resource_count=Subquery(resource_count, output_field=IntegerField()))
            .select_related("requester")
            .prefetch_related(
                "roles",
                # A request may name hundreds of resources; the list shows a few.
                Prefetch(
                    "resources",
                    queryset=Resource.objects.order_by("kind", "name")[:RESOURCES_SHOWN],
                    to_attr="first_resources",
                ),
            )
        )

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: AccessRequest) -> str:
        return _short(obj.pk)

    @admin.display(description="roles")
    def roles_display(self, obj: AccessRequest) -> str:
        return ", ".join(sorted(r.name for r in obj.roles.all()))

    @admin.display(description="resources")
    def resources_display(self, obj: AccessRequest) -> str:
        total = getattr(obj, "resource_count", None) or 0
        if not total:
            return "(role-based)"
        names = ", ".join(r.ref for r in obj.first_resources)
        return f"{names} (+{total - RESOURCES_SHOWN} more)" if total > RESOURCES_SHOWN else names

    @admin.display(description="approvals")
    def approvals_display(self, obj: AccessRequest) -> str:
        return f"{obj.approval_count} of {obj.approvals_required}"

    @admin.display(description="denials")
    def denials_display(self, obj: AccessRequest) -> str:
        return f"{obj.denial_count} of {obj.denials_required}"


# --- reviews ----------------------------------------------------------------------


@admin.register(Review)
class ReviewAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "request_link", "requester", "reviewer", "decision", "created_at")
    list_filter = ("decision",)
    search_fields = ("reviewer__username", "request__requester__username", "reason")
    list_select_related = ("reviewer", "request__requester")
    date_hierarchy = "created_at"
    fields = ("request_link", "requester", "reviewer", "decision", "reason", "created_at")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("reviewer", "request__requester")

    @admin.display(description="request")
    def request_link(self, obj: Review):
        return _change_link(obj.request, _short(obj.request_id))

    @admin.display(description="requester")
    def requester(self, obj: Review):
        return obj.request.requester


# --- grants -----------------------------------------------------------------------


class GrantStateFilter(admin.SimpleListFilter):
    """State computed from the timestamps, as the access check reads them."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return Grant.State.choices

    def queryset(self, request, queryset):
        now = timezone.now()
        live = Q(revoked_at__isnull=True)
        match self.value():
            case Grant.State.SCHEDULED:
                return queryset.filter(live, starts_at__gt=now)
            case Grant.State.ACTIVE:
                return queryset.active(at=now)
            case Grant.State.EXPIRED:
                return queryset.filter(live, expires_at__lte=now)
            case Grant.State.REVOKED:
                return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(Grant)
class GrantAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "user", "role", "resource", "starts_at", "expires_at", "state_display", "revoked_at")
    list_filter = (GrantStateFilter, "role", "resource__kind")
    search_fields = ("user__username", "role__name", "resource__name")
    list_select_related = ("user", "role", "resource")
    date_hierarchy = "starts_at"
    fields = (
        "request_link",
        "user",
        "role",
        "resource",
        "starts_at",
        "expires_at",
        "state_display",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
        "created_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "role", "resource", "revoked_by")

    @admin.display(description="state")
    def state_display(self, obj: Grant) -> str:
        return obj.state

    @admin.display(description="request")
    def request_link(self, obj: Grant):
        return _change_link(obj.request, _short(obj.request_id))


# --- audit log --------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "created_at", "actor_username", "action", "target_type", "target_id", "short_hash")
    list_filter = ("action", "target_type")
    search_fields = ("actor_username", "action", "target_id")
    date_hierarchy = "created_at"
    # The log grows without bound: skip the unfiltered count(*) on every page.
    show_full_result_count = False
    fields = (
        "id",
        "created_at",
        "actor_username",
        "action",
        "target_type",
        "target_id",
        "data_display",
        "prev_hash",
        "hash",
    )
    readonly_fields = fields

    @admin.display(description="hash")
    def short_hash(self, obj: AuditEvent) -> str:
        return obj.hash[:12]

    @admin.display(description="data")
    def data_display(self, obj: AuditEvent):
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True, ensure_ascii=False))
