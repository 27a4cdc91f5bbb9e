"""Requests, reviews, grants and the audit log in the admin: the reviewers' queue over read-only history.

Nobody adds, edits or deletes these here, superusers included: they change only
through the lifecycle services, which lock, check and audit. Staff (the
auditors) may read all of them. Reviewers are staff with the
``requests_app.review_accessrequest`` permission: the request list opens on
the requests awaiting their review, and approving, denying or revoking goes
through an intermediate page to the same service functions as the API, so
self-review, eligibility and thresholds hold; each refusal is reported.
"""

from __future__ import annotations

import json
import uuid

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.text import Truncator
from django.utils.timesince import timesince, timeuntil

from jitportal.errors import DomainError
from requests_app import services
from requests_app.forms import ReviewForm, RevokeForm, duration_label
from requests_app.models import AccessRequest, AuditEvent, Grant, Review
from requests_app.selectors import (
    RESOURCES_SHOWN,
    requests_awaiting_review,
    requests_summarised,
    review_summary,
    user_may_use_review_queue,
)

# One page of the queue; also bounds what a confirmation page lists by name.
QUEUE_PAGE = 100


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
    # Listed on the admin index for every staff user only when reviewers work
    # with it; otherwise only for holders of the model's view permission (and
    # superusers), so a reviewer's admin shows the queue, grants and the audit
    # log and nothing else. Any staff user may still open it (auditors).
    listed_for_staff = False

    def has_module_permission(self, request) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        return self.listed_for_staff or user.has_perm(f"{self.opts.app_label}.view_{self.opts.model_name}")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


def _short(pk) -> str:
    return str(pk)[:8]


def _change_link(obj, text: str):
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text)


def _request_label(access_request: AccessRequest) -> str:
    return f"{access_request.requester.username}'s request {_short(access_request.pk)}"


def _safe_next(request: HttpRequest, candidate: str | None, default: str) -> str:
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


def _parse_ids(raw_ids: list[str], parse) -> tuple[list[tuple[str, object]], list]:
    """(raw, parsed-or-None) in the order given, duplicates dropped; and the parsed values."""
    pairs = []
    for raw in dict.fromkeys(raw_ids):
        try:
            pairs.append((raw, parse(raw)))
        except (TypeError, ValueError):
            pairs.append((raw, None))
    return pairs, [value for _, value in pairs if value is not None]


def _selected_ids(request: HttpRequest, queryset) -> list[str]:
    """What the reviewer ticked, even rows the current filter no longer holds (they are then reported)."""
    if request.POST.get("select_across") == "1":
        return [str(pk) for pk in queryset.values_list("pk", flat=True)]
    return request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)


# --- access requests: the review queue ----------------------------------------------


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


class ReviewQueueFilter(admin.SimpleListFilter):
    """Opens on "Awaiting my review" for reviewers; "All requests" is an explicit choice."""

    title = "queue"
    parameter_name = "queue"
    AWAITING, REVIEWABLE, MINE, ALL = "awaiting", "reviewable", "mine", "all"

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        # Auditors without the review permission have no queue: they start on everything.
        self.default = self.AWAITING if user_may_use_review_queue(request.user) else self.ALL

    def lookups(self, request, model_admin):
        return [
            (self.AWAITING, "Awaiting my review"),
            (self.REVIEWABLE, "Any I may review"),
            (self.MINE, "My own requests"),
            (self.ALL, "All requests"),
        ]

    def value(self):
        return super().value() or self.default

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        user = request.user
        match self.value():
            case self.AWAITING:
                return queryset.filter(pk__in=requests_awaiting_review(user=user, at=timezone.now()).values("pk"))
            case self.REVIEWABLE:
                return queryset.filter(pk__in=AccessRequest.objects.reviewable_by(user).values("pk"))
            case self.MINE:
                return queryset.filter(requester=user)
        return queryset


@admin.register(AccessRequest)
class AccessRequestAdmin(ReadOnlyModelAdmin):
    listed_for_staff = True
    list_display = (
        "short_id",
        "requester",
        "roles_display",
        "resources_display",
        "reason_display",
        "age",
        "approvals_display",
        "pending_expiry_display",
        "state",
    )
    list_filter = (ReviewQueueFilter, "state", "roles")
    search_fields = ("requester__username", "reason", "resources__name")
    date_hierarchy = "created_at"
    list_per_page = QUEUE_PAGE
    actions = ["approve_selected", "deny_selected"]
    fields = (
        "id",
        "requester_display",
        "state",
        "roles",
        "resources",
        "reason",
        "duration_display",
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
        return requests_summarised(super().get_queryset(request))

    def has_review_permission(self, request) -> bool:
        return user_may_use_review_queue(request.user)

    # --- columns

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

    @admin.display(description="reason")
    def reason_display(self, obj: AccessRequest) -> str:
        return Truncator(obj.reason).chars(80) if obj.reason else "—"

    @admin.display(description="age", ordering="-created_at")
    def age(self, obj: AccessRequest) -> str:
        return timesince(obj.created_at, depth=1)

    @admin.display(description="requester")
    def requester_display(self, obj: AccessRequest) -> str:
        # Plain text: reviewers may not open user pages, so no link to one.
        name = obj.requester.get_full_name()
        return f"{name} ({obj.requester.username})" if name else obj.requester.username

    @admin.display(description="duration")
    def duration_display(self, obj: AccessRequest) -> str:
        return duration_label(obj.duration)

    @admin.display(description="approvals")
    def approvals_display(self, obj: AccessRequest) -> str:
        return f"{obj.approval_count} of {obj.approvals_required}"

    @admin.display(description="denials")
    def denials_display(self, obj: AccessRequest) -> str:
        return f"{obj.denial_count} of {obj.denials_required}"

    @admin.display(description="pending expiry", ordering="pending_expires_at")
    def pending_expiry_display(self, obj: AccessRequest) -> str:
        if obj.state != AccessRequest.State.PENDING:
            return "—"
        if obj.pending_expires_at <= timezone.now():
            return "expired"
        return f"in {timeuntil(obj.pending_expires_at, depth=1)}"

    # --- pages

    def changelist_view(self, request, extra_context=None):
        context = dict(extra_context or {})
        queue = request.GET.get(ReviewQueueFilter.parameter_name)
        if user_may_use_review_queue(request.user) and queue in (None, ReviewQueueFilter.AWAITING):
            context.setdefault("title", "Access requests awaiting my review")
        return super().changelist_view(request, extra_context=context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if obj is not None:
            context["review"] = self._review_buttons(request, obj)
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _review_buttons(self, request, obj: AccessRequest) -> dict | None:
        """Approve / Deny on the change page, or why they are not offered.

        Only a hint for the page: the service decides again when the reviewer confirms.
        """
        user = request.user
        if not self.has_review_permission(request):
            return None
        note = ""
        if obj.state != AccessRequest.State.PENDING:
            note = f"This request is {obj.state}; only pending requests can be reviewed."
        elif obj.requester_id == user.pk:
            note = "This is your own request; another reviewer decides on it."
        elif not services.reviewer_is_eligible(reviewer=user, roles=list(obj.roles.all())):
            note = "You are not a reviewer for every role of this request."
        elif any(review.reviewer_id == user.pk for review in obj.reviews.all()):
            note = "You have already reviewed this request."
        url = reverse("admin:requests_app_accessrequest_review")
        return {
            "note": note,
            "approve_url": f"{url}?decision=approve&ids={obj.pk}",
            "deny_url": f"{url}?decision=deny&ids={obj.pk}",
        }

    def get_urls(self):
        review = path("review/", self.admin_site.admin_view(self.review_view), name="requests_app_accessrequest_review")
        # Before the defaults: "<path:object_id>/" would otherwise take "review/".
        return [review, *super().get_urls()]

    # --- approve / deny

    @admin.action(description="Approve selected requests…", permissions=["review"])
    def approve_selected(self, request, queryset):
        ids = _selected_ids(request, queryset)
        return self._review_page(request, ids, Review.Decision.APPROVE, next_url=request.get_full_path())

    @admin.action(description="Deny selected requests…", permissions=["review"])
    def deny_selected(self, request, queryset):
        ids = _selected_ids(request, queryset)
        return self._review_page(request, ids, Review.Decision.DENY, next_url=request.get_full_path())

    def review_view(self, request: HttpRequest) -> HttpResponse:
        """The confirmation page (GET, from the change page's buttons) and the reviews themselves (POST)."""
        if not self.has_review_permission(request):
            raise PermissionDenied
        data = request.POST if request.method == "POST" else request.GET
        decision = data.get("decision", "")
        if decision not in Review.Decision.values:
            return HttpResponseBadRequest("decision must be approve or deny")
        form = ReviewForm(request.POST) if request.method == "POST" else None
        return self._review_page(request, data.getlist("ids"), decision, next_url=data.get("next"), form=form)

    def _review_page(self, request, raw_ids: list[str], decision: str, *, next_url, form: ReviewForm | None = None):
        next_url = _safe_next(request, next_url, reverse("admin:requests_app_accessrequest_changelist"))
        pairs, ids = _parse_ids(raw_ids, uuid.UUID)
        requests = requests_summarised(AccessRequest.objects.visible_to(request.user).filter(pk__in=ids))
        found = {r.pk: r for r in requests.order_by()}
        if form is not None and form.is_valid() and self._review_all(request, pairs, found, form):
            return HttpResponseRedirect(next_url)
        verb = "Approve" if decision == Review.Decision.APPROVE else "Deny"
        return _confirmation(
            self,
            request,
            template="admin/requests_app/review_confirm.html",
            title=f"{verb} {_count(len(pairs), 'access request')}",
            form=form or ReviewForm(initial={"decision": decision}),
            pairs=pairs,
            found=found,
            next_url=next_url,
            action_url=reverse("admin:requests_app_accessrequest_review"),
            decision=decision,
            notes=self._review_notes(request, list(found.values())),
        )

    def _review_notes(self, request, requests: list[AccessRequest]) -> dict:
        """Why an item will be refused, for the confirmation page, in one query (the service decides)."""
        user = request.user
        reviewable = set(
            AccessRequest.objects.reviewable_by(user)
            .filter(pk__in=[r.pk for r in requests])
            .values_list("pk", flat=True)
        )
        notes = {}
        for r in requests:
            if r.state != AccessRequest.State.PENDING:
                notes[r.pk] = f"it is {r.state}: will be refused"
            elif r.requester_id == user.pk:
                notes[r.pk] = "your own request: will be refused"
            elif r.pk not in reviewable:
                notes[r.pk] = "you are not a reviewer for every role: will be refused"
        return notes

    def _review_all(self, request, pairs, found, form: ReviewForm) -> bool:
        """Review each request through the service; False when the form itself was refused (shown again)."""
        decision, reason = form.cleaned_data["decision"], form.cleaned_data["reason"]
        done = []
        for raw, pk in pairs:
            access_request = found.get(pk)
            if access_request is None:
                messages.error(request, f"{raw}: no such request.")
                continue
            try:
                services.request_review(request=access_request, reviewer=request.user, decision=decision, reason=reason)
            except DomainError as error:
                # A refused reason is refused for every item: say it once, beside the field.
                if error.field in form.fields and not done:
                    form.add_error(error.field, error.message)
                    return False
                messages.error(request, f"{_request_label(access_request)}: {error.message}.")
                continue
            if access_request.state == AccessRequest.State.PENDING:
                approvals = access_request.approval_count + (decision == Review.Decision.APPROVE)
                outcome = f"still pending, {approvals} of {access_request.approvals_required} approvals"
            else:
                outcome = f"now {access_request.state}"
            done.append(f"{_request_label(access_request)} ({outcome})")
        if done:
            verb = "Approved" if decision == Review.Decision.APPROVE else "Denied"
            messages.success(request, f"{verb}: {_listing(done)}.")
        return True


def _listing(items: list[str], shown: int = 10) -> str:
    """Successes in one message: a bulk action over hundreds of rows must not flood the page."""
    text = "; ".join(items[:shown])
    return f"{text}; and {len(items) - shown} more" if len(items) > shown else text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _confirmation(
    model_admin, request, *, template, title, form, pairs, found, next_url, action_url, notes=None, **extra
):
    """An intermediate page in the admin's look: the items (each with a note), a reason, Confirm / Go back."""
    notes = notes or {}
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "form": form,
        "items": [(raw, found.get(pk), notes.get(pk, "")) for raw, pk in pairs],
        "ids": [raw for raw, _ in pairs],
        "next_url": next_url,
        "action_url": action_url,
        **extra,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, template, context, status=400 if form.is_bound else 200)


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
    listed_for_staff = True
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
        return super().get_queryset(request).select_related("user", "role", "resource", "revoked_by", "request")

    def has_revoke_permission(self, request) -> bool:
        # As the API: staff end access early (the service checks again).
        return request.user.is_active and request.user.is_staff

    @admin.display(description="state")
    def state_display(self, obj: Grant) -> str:
        return obj.state

    @admin.display(description="request")
    def request_link(self, obj: Grant):
        return _change_link(obj.request, _short(obj.request_id))

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
        return self._revoke_page(request, _selected_ids(request, queryset), next_url=request.get_full_path())

    def revoke_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_revoke_permission(request):
            raise PermissionDenied
        data = request.POST if request.method == "POST" else request.GET
        form = RevokeForm(request.POST) if request.method == "POST" else None
        return self._revoke_page(request, data.getlist("ids"), next_url=data.get("next"), form=form)

    def _revoke_page(self, request, raw_ids: list[str], *, next_url, form: RevokeForm | None = None):
        next_url = _safe_next(request, next_url, reverse("admin:requests_app_grant_changelist"))
        pairs, ids = _parse_ids(raw_ids, int)
        grants = Grant.objects.visible_to(request.user).filter(pk__in=ids)
        found = {g.pk: g for g in grants.select_related("user", "role", "resource", "request")}
        if form is not None and form.is_valid() and self._revoke_all(request, pairs, found, form):
            return HttpResponseRedirect(next_url)
        return _confirmation(
            self,
            request,
            template="admin/requests_app/revoke_confirm.html",
            title=f"Revoke {_count(len(pairs), 'grant')}",
            form=form or RevokeForm(),
            pairs=pairs,
            found=found,
            next_url=next_url,
            action_url=reverse("admin:requests_app_grant_revoke"),
        )

    def _revoke_all(self, request, pairs, found, form: RevokeForm) -> bool:
        reason = form.cleaned_data["reason"]
        done = []
        for raw, pk in pairs:
            grant = found.get(pk)
            if grant is None:
                messages.error(request, f"grant {raw}: no such grant.")
                continue
            try:
                services.grant_revoke(grant=grant, by=request.user, reason=reason)
            except DomainError as error:
                if error.field in form.fields and not done:
                    form.add_error(error.field, error.message)
                    return False
                messages.error(request, f"grant {grant.pk} ({grant}): {error.message}.")
                continue
            done.append(f"{grant.pk} ({grant})")
        if done:
            messages.success(request, f"Revoked: {_listing([f'grant {d}' for d in done])}.")
        return True


# --- audit log --------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    listed_for_staff = True
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


# --- the admin index: a small summary for reviewers ------------------------------------


def _index_with_summary(index):
    def view(request, extra_context=None):
        summary = review_summary(user=request.user, at=timezone.now())
        return index(request, extra_context={"review_summary": summary, **(extra_context or {})})

    return view


# The admin builds its URLs from ``site.index`` when jitportal/urls.py is
# imported, after this module registered the models, so this is what /admin/ serves.
admin.site.index = _index_with_summary(admin.site.index)
