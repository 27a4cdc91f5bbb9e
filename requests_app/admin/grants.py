"""Grants in the admin: read-only, with a Revoke action through a confirmation page."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse

from accounts import capabilities
from requests_app import services
from requests_app.admin.base import (
    DerivedStateFilter,
    ReadOnlyModelAdmin,
    apply_each,
    change_link,
    confirmation,
    count_of,
    listing,
    parse_ids,
    safe_next,
    selected_ids,
    short_id,
)
from requests_app.forms import RevokeForm
from requests_app.models import Grant

# --- grants -----------------------------------------------------------------------


class GrantStateFilter(DerivedStateFilter):
    """State computed from the timestamps, as the access check reads them."""

    states = Grant.State


@admin.register(Grant)
class GrantAdmin(ReadOnlyModelAdmin):
    may_view = staticmethod(capabilities.may_read_all_grants)
    refusal = capabilities.refusal_of_any("the audit or revoke capability")
    list_display = ("id", "user", "role", "resource", "starts_at", "expires_at", "state_display", "revoked_at")
    list_filter = (GrantStateFilter, "role", "resource__kind")
    search_fields = ("user__username", "role__name", "resource__name")
    list_select_related = ("user", "role", "resource")
    date_hierarchy = "starts_at"
    actions = ["revoke_selected"]
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
        return Grant.objects.visible_to(request.user).select_related(
            "user", "role", "resource", "revoked_by", "request"
        )

    def has_revoke_permission(self, request) -> bool:
        # As the API (the service checks again).
        return capabilities.may_revoke(request.user)

    @admin.display(description="state")
    def state_display(self, obj: Grant) -> str:
        return obj.state

    @admin.display(description="request")
    def request_link(self, obj: Grant):
        return change_link(obj.request, short_id(obj.request_id))

    def get_urls(self):
        revoke = path("revoke/", self.admin_site.admin_view(self.revoke_view), name="requests_app_grant_revoke")
        return [revoke, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if (
            obj is not None
            and self.has_revoke_permission(request)
            and obj.state in (Grant.State.ACTIVE, Grant.State.SCHEDULED)
        ):
            context["revoke_url"] = f"{reverse('admin:requests_app_grant_revoke')}?ids={obj.pk}"
        return super().change_view(request, object_id, form_url, extra_context=context)

    @admin.action(description="Revoke selected grants…", permissions=["revoke"])
    def revoke_selected(self, request, queryset):
        return self._revoke_page(request, selected_ids(request, queryset), next_url=request.get_full_path())

    def revoke_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_revoke_permission(request):
            raise PermissionDenied(capabilities.refusal(capabilities.Capability.REVOKE))
        data = request.POST if request.method == "POST" else request.GET
        form = RevokeForm(request.POST) if request.method == "POST" else None
        return self._revoke_page(request, data.getlist("ids"), next_url=data.get("next"), form=form)

    def _revoke_page(self, request, raw_ids: list[str], *, next_url, form: RevokeForm | None = None):
        next_url = safe_next(request, next_url, reverse("admin:requests_app_grant_changelist"))
        pairs, ids = parse_ids(raw_ids, int)
        grants = Grant.objects.visible_to(request.user).filter(pk__in=ids)
        found = {g.pk: g for g in grants.select_related("user", "role", "resource", "request")}
        if form is not None and form.is_valid() and self._revoke_all(request, pairs, found, form):
            return HttpResponseRedirect(next_url)
        return confirmation(
            self,
            request,
            template="admin/requests_app/revoke_confirm.html",
            title=f"Revoke {count_of(len(pairs), 'grant')}",
            form=form or RevokeForm(),
            pairs=pairs,
            found=found,
            next_url=next_url,
            action_url=reverse("admin:requests_app_grant_revoke"),
        )

    def _revoke_all(self, request, pairs, found, form: RevokeForm) -> bool:
        reason = form.cleaned_data["reason"]
        done = apply_each(
            request,
            form,
            pairs,
            found,
            act=lambda g: services.grant_revoke(grant=g, by=request.user, reason=reason),
            label=lambda g: f"grant {g.pk} ({g})",
            missing=lambda raw: f"grant {raw}: no such grant.",
        )
        if done is None:
            return False
        if done:
            messages.success(request, f"Revoked: {listing([f'grant {g.pk} ({g})' for g in done])}.")
        return True
