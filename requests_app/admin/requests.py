"""Requests, reviews, grants and the audit log in the admin: the reviewers' queue over read-only history.

Nobody adds, edits or deletes these here, superusers included: they change only
through the lifecycle services, which lock, check and audit. Holders of the
``audit`` capability read all of them. Reviewers (members of a role's
``reviewers`` group, no staff flag needed) see the requests they may review
and their own: the request list opens on the requests awaiting their review,
and approving, denying or revoking goes through an intermediate page to the
same service functions as the API, so self-review, eligibility and thresholds
hold; each refusal is reported. Who sees what is ``accounts.capabilities``.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, Q
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext

from accounts import capabilities
from accounts.mfa import mfa_session_verified_at
from jitportal.admin_display import RelatedOnlyFilterWithoutNone, clipped
from jitportal.durations import duration_label
from requests_app import services
from requests_app.admin.base import (
    QUEUE_PAGE,
    DerivedStateFilter,
    ReadOnlyAdminMixin,
    ReadOnlyModelAdmin,
    apply_each,
    asked,
    change_link,
    confirmation,
    count_of,
    listing,
    parse_ids,
    request_label,
    safe_next,
    selected_ids,
    short_id,
)
from requests_app.forms import PostReviewForm, ReviewForm
from requests_app.models import AccessRequest, Grant, Review
from requests_app.selectors import (
    RESOURCES_SHOWN,
    requests_awaiting_review,
    requests_summarised,
)

# --- access requests: the review queue ----------------------------------------------


class ReviewInline(ReadOnlyAdminMixin, admin.TabularInline):
    # Shown with a request to whoever may open it (its reviewers, auditors).
    may_view = staticmethod(capabilities.may_read_requests)
    model = Review
    fields = ("reviewer", "decision", "reason", "duration", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("reviewer")


class GrantInline(ReadOnlyAdminMixin, admin.TabularInline):
    may_view = staticmethod(capabilities.may_read_requests)
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
        self.default = self.AWAITING if asked(request, capabilities.may_review_queue) else self.ALL

    def lookups(self, request, model_admin):
        return [
            (self.AWAITING, "Awaiting my review"),
            (self.REVIEWABLE, "Any I may review"),
            (self.MINE, "My own requests"),
            (self.ALL, "All requests"),
        ]

    def value(self):
        return super().value() or self.default

    @classmethod
    def opens_on_awaiting(cls, request) -> bool:
        """Whether this page is the "Awaiting my review" queue, before any filter is built."""
        chosen = request.GET.get(cls.parameter_name)
        return chosen == cls.AWAITING or (chosen is None and asked(request, capabilities.may_review_queue))

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
                # Started afresh rather than narrowing the visible requests it is given: what awaits
                # one's review is always among them (reviewable implies visible, see
                # AccessRequestQuerySet.visible_to), and testing both rules on every waiting request
                # would double the cost of the queue's count and page. This filter comes first, so it
                # is given the admin's own queryset and nothing else narrowed it before.
                fresh = AccessRequest.objects.select_related("requester")
                return requests_awaiting_review(user=user, at=timezone.now(), queryset=fresh)
            case self.REVIEWABLE:
                return queryset.reviewable_by(user)
            case self.MINE:
                return queryset.filter(requester=user)
        return queryset


class RequestRoleFilter(RelatedOnlyFilterWithoutNone):
    """The roles of requests one may see, each found by a probe that stops at its first visible request.

    Django's own lists every role id of every visible request and then keeps
    the distinct ones: the whole queue read on every page.
    """

    def field_choices(self, field, request, model_admin):
        visible = model_admin.get_queryset(request).filter(pk=OuterRef("accessrequest_id"))
        used = AccessRequest.roles.through.objects.filter(role_id=OuterRef("pk")).filter(Exists(visible))
        ordering = self.field_admin_ordering(field, request, model_admin)
        return field.get_choices(include_blank=False, ordering=ordering, limit_choices_to=Q(Exists(used)))


class BreakGlassFilter(admin.SimpleListFilter):
    """Break-glass requests, first of all those still awaiting their review after the fact."""

    title = "break-glass"
    parameter_name = "break_glass"

    def lookups(self, request, model_admin):
        return [
            (AccessRequest.PostReview.PENDING, "Break-glass awaiting review"),
            (AccessRequest.PostReview.RATIFIED, "Break-glass ratified"),
            (AccessRequest.PostReview.REJECTED, "Break-glass rejected"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value in AccessRequest.PostReview.values:
            return queryset.filter(break_glass=True, post_review=value)
        return queryset


class RequestStateFilter(DerivedStateFilter):
    """Past its time to live a pending request is expired, whether or not the sweep has run."""

    states = AccessRequest.State


# How the admin words each ``services.review_refusal``: the rule is the service's, only the phrasing is here.
_Code = services.ReviewRefusal.Code
_CHANGE_PAGE_NOTES = {
    _Code.SELF: "This is your own request; another reviewer decides on it.",
    _Code.INELIGIBLE: "You are not a reviewer for every role of this request.",
    _Code.NOT_PENDING: "This request is {state}; only pending requests can be reviewed.",
    _Code.ALREADY_REVIEWED: "You have already reviewed this request.",
    _Code.MFA_REQUIRED: "Reviewing this request needs a second factor verified in the last 15 minutes.",
}
_CONFIRMATION_NOTES = {
    _Code.SELF: "your own request: will be refused",
    _Code.INELIGIBLE: "you are not a reviewer for every role: will be refused",
    _Code.NOT_PENDING: "it is {state}: will be refused",
    _Code.ALREADY_REVIEWED: "you have already reviewed it: will be refused",
    _Code.MFA_REQUIRED: "needs a second factor verified in the last 15 minutes",
}


# The queue's count stops here (or one page past the page shown, whichever is more): counting
# ten thousand waiting requests costs more than the page of them, to say nothing more useful.
QUEUE_COUNT_CAP = 1000


class CappedCountPaginator(Paginator):
    """A paginator whose count stops at ``cap``; ``exact`` is False when there are more rows.

    Every page up to the cap is offered, and the cap moves one page past the page asked for,
    so "next" always leads on however deep one goes.
    """

    def __init__(self, object_list, per_page, *, cap: int, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self.cap = cap
        self.exact = True

    @cached_property
    def count(self) -> int:
        found = self.object_list.order_by()[: self.cap + 1].count()
        self.exact = found <= self.cap
        return min(found, self.cap)


# Stands for a row's id while the change page's URL is resolved once for a whole page.
_URL_PROBE = uuid.UUID(int=0)


class SummarisedChangeList(ChangeList):
    """The request list, with the summary (review counts, resources) read for the shown rows only.

    Summarising in the list's own query would make every COUNT and the date
    drill-down aggregate over each matching request, not just one page.
    """

    def __init__(self, request, model, list_display, list_display_links, list_filter, date_hierarchy, *args):
        # The queue holds only requests still within their time to live, so a drill-down by
        # creation date has little to narrow, yet would cost two more passes over every
        # waiting request (their date range, then their days). It stays for the history
        # ("All requests" and the rest) and wherever a date was already chosen.
        if ReviewQueueFilter.opens_on_awaiting(request) and not any(
            key.startswith(f"{date_hierarchy}__") for key in request.GET
        ):
            date_hierarchy = None
        super().__init__(request, model, list_display, list_display_links, list_filter, date_hierarchy, *args)

    def get_results(self, request):
        super().get_results(request)
        # What the page says of the count: "1000+" when the paginator stopped counting there.
        exact = getattr(self.paginator, "exact", True)
        self.result_count_exact = exact
        self.result_count_label = f"{self.result_count}" if exact else f"{self.result_count}+"
        # The page (still a lazy slice) becomes a subquery of the summary's one read, in the list's order.
        page = self.result_list.values("pk")
        ordering = self.result_list.query.order_by
        self.result_list = list(requests_summarised(AccessRequest.objects.filter(pk__in=page)).order_by(*ordering))

    @cached_property
    def _change_url_template(self) -> str:
        return super().url_for_result(AccessRequest(pk=_URL_PROBE)).replace(str(_URL_PROBE), "{}")

    def url_for_result(self, result) -> str:
        # Resolved once per page, not once per row: each reverse() walks the URL patterns.
        return self._change_url_template.format(quote(result.pk))


@admin.register(AccessRequest)
class AccessRequestAdmin(ReadOnlyModelAdmin):
    may_view = staticmethod(capabilities.may_read_requests)
    refusal = capabilities.refusal_of_any("the audit capability", "to be a reviewer of some role")
    list_display = (
        "short_id",
        "requester",
        "extends_display",
        "roles_display",
        "resources_display",
        "reason_display",
        "age",
        "approvals_display",
        "pending_expiry_display",
        "state_display",
    )
    # Only the roles of requests one may see (a reviewer does not learn other teams' roles here),
    # and no "-" entry: every request has a role.
    list_filter = (ReviewQueueFilter, BreakGlassFilter, RequestStateFilter, ("roles", RequestRoleFilter))
    search_fields = ("requester__username", "reason", "resources__name")
    date_hierarchy = "created_at"
    list_per_page = QUEUE_PAGE
    # "N results" counts the filtered rows only; a second COUNT of every visible request is not worth it.
    show_full_result_count = False
    actions = ["approve_selected", "deny_selected", "ratify_selected", "reject_selected"]
    fields = (
        "id",
        "requester_display",
        "state_display",
        "extends_display",
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
        "break_glass",
        "post_review",
        "post_reviewed_by",
        "post_reviewed_at",
        "post_review_reason",
    )
    readonly_fields = fields
    inlines = (ReviewInline, GrantInline)

    def get_queryset(self, request):
        # Reviewers see what they may review (and their own); auditors everything. Plain rows: the
        # counts, the date drill-down and the page are read without the summary, which only the
        # rows shown get (SummarisedChangeList, get_object).
        return AccessRequest.objects.visible_to(request.user).select_related("requester")

    def get_changelist(self, request, **kwargs):
        return SummarisedChangeList

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        text = request.GET.get(PAGE_VAR, "")
        # As the changelist reads it; a number too long to be a page is page 1 here (the
        # changelist then refuses it as it would any page past the end).
        page = int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else 1
        cap = max(QUEUE_COUNT_CAP, (page + 1) * per_page)
        return CappedCountPaginator(
            queryset, per_page, cap=cap, orphans=orphans, allow_empty_first_page=allow_empty_first_page
        )

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        return None if obj is None else requests_summarised(AccessRequest.objects.filter(pk=obj.pk)).get()

    def has_review_permission(self, request) -> bool:
        return asked(request, capabilities.may_review_queue)

    # --- columns

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj: AccessRequest) -> str:
        # Django's own renders a form widget through the template engine for each row, the
        # costliest cell of the page; this is the same markup from one format string.
        label = format_html(gettext("Select this object for an action - {}"), str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            label,
        )

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: AccessRequest) -> str:
        return short_id(obj.pk)

    @admin.display(description="state", ordering="state")
    def state_display(self, obj: AccessRequest) -> str:
        return obj.current_state

    @admin.display(description="extends")
    def extends_display(self, obj: AccessRequest) -> str:
        # An extension asks for more of access already granted: reviewers should see of which request.
        if obj.extends_id is None:
            return "—"
        return change_link(AccessRequest(pk=obj.extends_id), f"extension of {short_id(obj.extends_id)}")

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
        return clipped(obj.reason)

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
        if obj.current_state != AccessRequest.State.PENDING:
            return "—"
        return f"in {timeuntil(obj.pending_expires_at, depth=1)}"

    # --- pages

    def changelist_view(self, request, extra_context=None):
        context = dict(extra_context or {})
        queue = request.GET.get(ReviewQueueFilter.parameter_name)
        if asked(request, capabilities.may_review_queue) and queue in (None, ReviewQueueFilter.AWAITING):
            context.setdefault("title", "Access requests awaiting my review")
            # Said instead of an empty table (and "0 access requests") when the queue is clear.
            context.setdefault("empty_queue_note", "Nothing awaits your review.")
        response = super().changelist_view(request, extra_context=context)
        cl = getattr(response, "context_data", None) and response.context_data.get("cl")
        if cl is not None and not cl.result_count_exact:
            # Django words "select all" with the count, which stopped early here.
            response.context_data["selection_note_all"] = f"All {cl.result_count_label} selected"
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if obj is not None:
            context["review"] = self._review_buttons(request, obj)
            context["post_review"] = self._post_review_buttons(request, obj)
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _review_buttons(self, request, obj: AccessRequest) -> dict | None:
        """Approve / Deny on the change page, or why they are not offered.

        Only a hint for the page: the service decides again when the reviewer confirms.
        """
        if not self.has_review_permission(request):
            return None
        refusal = services.review_refusal(
            obj, request.user, at=timezone.now(), mfa_verified_at=mfa_session_verified_at(request)
        )
        url = reverse("admin:requests_app_accessrequest_review")
        return {
            "note": _CHANGE_PAGE_NOTES[refusal.code].format(state=refusal.state) if refusal else "",
            "approve_url": f"{url}?decision=approve&ids={obj.pk}",
            "deny_url": f"{url}?decision=deny&ids={obj.pk}",
        }

    def _post_review_buttons(self, request, obj: AccessRequest) -> dict | None:
        """Ratify / Reject on a break-glass request awaiting its review; the service decides again on confirm."""
        if obj.post_review != AccessRequest.PostReview.PENDING or not self.has_review_permission(request):
            return None
        url = reverse("admin:requests_app_accessrequest_post_review")
        note = ""
        if obj.requester_id == request.user.pk:
            note = "This is your own break-glass access; another reviewer reviews it."
        elif not services.reviewer_is_eligible(reviewer=request.user, roles=list(obj.roles.all())):
            note = "You are not a reviewer for every role of this request."
        return {
            "note": note,
            "ratify_url": f"{url}?decision=ratify&ids={obj.pk}",
            "reject_url": f"{url}?decision=reject&ids={obj.pk}",
        }

    def get_urls(self):
        review = path("review/", self.admin_site.admin_view(self.review_view), name="requests_app_accessrequest_review")
        post_review = path(
            "post-review/",
            self.admin_site.admin_view(self.post_review_view),
            name="requests_app_accessrequest_post_review",
        )
        # Before the defaults: "<path:object_id>/" would otherwise take "review/".
        return [review, post_review, *super().get_urls()]

    # --- break-glass post-review

    @admin.action(description="Ratify selected break-glass access…", permissions=["review"])
    def ratify_selected(self, request, queryset):
        ids = selected_ids(request, queryset)
        return self._post_review_page(request, ids, "ratify", next_url=request.get_full_path())

    @admin.action(description="Reject selected break-glass access (ends it)…", permissions=["review"])
    def reject_selected(self, request, queryset):
        ids = selected_ids(request, queryset)
        return self._post_review_page(request, ids, "reject", next_url=request.get_full_path())

    def post_review_view(self, request: HttpRequest) -> HttpResponse:
        """The confirmation page (GET, from the change page's buttons) and the post-reviews themselves (POST)."""
        if not self.has_review_permission(request):
            raise PermissionDenied("You review only as a member of a role's reviewers group.")
        data = request.POST if request.method == "POST" else request.GET
        decision = data.get("decision", "")
        if decision not in ("ratify", "reject"):
            return HttpResponseBadRequest("decision must be ratify or reject")
        form = PostReviewForm(request.POST) if request.method == "POST" else None
        return self._post_review_page(request, data.getlist("ids"), decision, next_url=data.get("next"), form=form)

    def _post_review_page(
        self, request, raw_ids: list[str], decision: str, *, next_url, form: PostReviewForm | None = None
    ):
        next_url = safe_next(request, next_url, reverse("admin:requests_app_accessrequest_changelist"))
        pairs, ids = parse_ids(raw_ids, uuid.UUID)
        requests = requests_summarised(AccessRequest.objects.visible_to(request.user).filter(pk__in=ids))
        found = {r.pk: r for r in requests.order_by()}
        if form is not None and form.is_valid():
            reason = form.cleaned_data["reason"]
            done = apply_each(
                request,
                form,
                pairs,
                found,
                act=lambda r: services.request_post_review(
                    request=r, reviewer=request.user, decision=decision, reason=reason
                ),
                label=request_label,
                missing=lambda raw: f"{raw}: no such request.",
            )
            if done is not None:
                if done:
                    verb = "Ratified" if decision == "ratify" else "Rejected (access ended)"
                    messages.success(request, f"{verb}: {listing([request_label(r) for r in done])}.")
                return HttpResponseRedirect(next_url)
        notes = {
            pk: f"post-review is {r.post_review or 'not applicable'}: will be refused"
            for pk, r in found.items()
            if r.post_review != AccessRequest.PostReview.PENDING
        }
        notes |= {
            pk: "your own request: will be refused" for pk, r in found.items() if r.requester_id == request.user.pk
        }
        verb = "Ratify" if decision == "ratify" else "Reject"
        return confirmation(
            self,
            request,
            template="admin/requests_app/post_review_confirm.html",
            title=f"{verb} {count_of(len(pairs), 'break-glass request')}",
            form=form or PostReviewForm(initial={"decision": decision}),
            pairs=pairs,
            found=found,
            next_url=next_url,
            action_url=reverse("admin:requests_app_accessrequest_post_review"),
            decision=decision,
            notes=notes,
        )

    # --- approve / deny

    @admin.action(description="Approve selected requests…", permissions=["review"])
    def approve_selected(self, request, queryset):
        ids = selected_ids(request, queryset)
        return self._review_page(request, ids, Review.Decision.APPROVE, next_url=request.get_full_path())

    @admin.action(description="Deny selected requests…", permissions=["review"])
    def deny_selected(self, request, queryset):
        ids = selected_ids(request, queryset)
        return self._review_page(request, ids, Review.Decision.DENY, next_url=request.get_full_path())

    def review_view(self, request: HttpRequest) -> HttpResponse:
        """The confirmation page (GET, from the change page's buttons) and the reviews themselves (POST)."""
        if not self.has_review_permission(request):
            raise PermissionDenied("You review only as a member of a role's reviewers group.")
        data = request.POST if request.method == "POST" else request.GET
        decision = data.get("decision", "")
        if decision not in Review.Decision.values:
            return HttpResponseBadRequest("decision must be approve or deny")
        form = ReviewForm(request.POST) if request.method == "POST" else None
        return self._review_page(request, data.getlist("ids"), decision, next_url=data.get("next"), form=form)

    def _review_page(self, request, raw_ids: list[str], decision: str, *, next_url, form: ReviewForm | None = None):
        next_url = safe_next(request, next_url, reverse("admin:requests_app_accessrequest_changelist"))
        pairs, ids = parse_ids(raw_ids, uuid.UUID)
        requests = requests_summarised(AccessRequest.objects.visible_to(request.user).filter(pk__in=ids))
        found = {r.pk: r for r in requests.order_by()}
        refusals = services.review_refusals(
            list(found.values()), request.user, at=timezone.now(), mfa_verified_at=mfa_session_verified_at(request)
        )
        if any(r.code == _Code.MFA_REQUIRED for r in refusals.values()):
            # Verify, then come back to this confirmation page (a GET: a POSTed reason is asked again).
            query = urlencode({"decision": decision, "next": next_url, "ids": [str(pk) for pk in ids]}, doseq=True)
            back = f"{reverse('admin:requests_app_accessrequest_review')}?{query}"
            return HttpResponseRedirect(f"{reverse('mfa-verify')}?{urlencode({'next': back})}")
        if form is not None and form.is_valid() and self._review_all(request, pairs, found, form):
            return HttpResponseRedirect(next_url)
        verb = "Approve" if decision == Review.Decision.APPROVE else "Deny"
        return confirmation(
            self,
            request,
            template="admin/requests_app/review_confirm.html",
            title=f"{verb} {count_of(len(pairs), 'access request')}",
            form=form or ReviewForm(initial={"decision": decision}),
            pairs=pairs,
            found=found,
            next_url=next_url,
            action_url=reverse("admin:requests_app_accessrequest_review"),
            decision=decision,
            notes={pk: _CONFIRMATION_NOTES[r.code].format(state=r.state) for pk, r in refusals.items()},
        )

    def _review_all(self, request, pairs, found, form: ReviewForm) -> bool:
        """Review each request through the service; False when the form itself was refused (shown again)."""
        decision, reason = form.cleaned_data["decision"], form.cleaned_data["reason"]
        duration = form.cleaned_data.get("duration") or None
        done = apply_each(
            request,
            form,
            pairs,
            found,
            act=lambda r: services.request_review(
                request=r,
                reviewer=request.user,
                decision=decision,
                reason=reason,
                duration=duration,
                mfa_verified_at=mfa_session_verified_at(request),
            ),
            label=request_label,
            missing=lambda raw: f"{raw}: no such request.",
        )
        if done is None:
            return False
        outcomes = []
        for access_request in done:
            if access_request.state == AccessRequest.State.PENDING:
                approvals = access_request.approval_count + (decision == Review.Decision.APPROVE)
                outcome = f"still pending, {approvals} of {access_request.approvals_required} approvals"
            else:
                outcome = f"now {access_request.state}"
            outcomes.append(f"{request_label(access_request)} ({outcome})")
        if outcomes:
            verb = "Approved" if decision == Review.Decision.APPROVE else "Denied"
            messages.success(request, f"{verb}: {listing(outcomes)}.")
        return True


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
        return change_link(obj.request, short_id(obj.request_id))

    @admin.display(description="requester")
    def requester(self, obj: Review):
        return obj.request.requester
