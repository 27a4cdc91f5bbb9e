"""The self-service pages: dashboard, resource search, request form, my requests.

Thin: reads come from selectors, every change goes through the lifecycle
service, and a ``DomainError`` becomes a message next to the field it names.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts import capabilities
from accounts.selectors import resources_searchable_by, roles_matching, roles_requestable_by
from inventory.filters import ResourceFilterSet
from inventory.pagination import cursor_for, cursor_parse, few_first, keyset_page, matches_capped
from jitportal.errors import DomainError
from requests_app import selectors, services
from requests_app.forms import AccessRequestForm, ExtendForm
from requests_app.models import AccessRequest, Grant

PAGE_SIZE = 25


def _page(request: HttpRequest, items):
    return Paginator(items, PAGE_SIZE).get_page(request.GET.get("page"))


def _query_without_page(request: HttpRequest) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    board = selectors.dashboard_for(user=request.user, at=now)
    return render(request, "portal/dashboard.html", {"board": board, "now": now})


@dataclass
class SearchPage:
    """One page of the search, with a count that stops at ``COUNT_CAP`` and links by cursor."""

    rows: list
    count: int
    count_exact: bool
    next_query: str | None
    previous_query: str | None


def _search_page(request: HttpRequest, queryset, roles) -> SearchPage:
    cursor = request.GET.get("cursor")
    position = cursor_parse(cursor) if cursor else None
    count, exact, ids = matches_capped(queryset)
    found = keyset_page(few_first(queryset, ids) if exact else queryset, position=position, size=PAGE_SIZE)
    params = request.GET.copy()
    params.pop("page", None)

    def query(position, *, backward: bool) -> str:
        params["cursor"] = cursor_for(position, backward=backward)
        return params.urlencode()

    return SearchPage(
        rows=[(resource, roles_matching(resource, roles)) for resource in found.items],
        count=count,
        count_exact=exact,
        next_query=query(found.next, backward=False) if found.next else None,
        previous_query=query(found.previous, backward=True) if found.previous else None,
    )


@login_required
def resource_search(request: HttpRequest) -> HttpResponse:
    """The API's scoping, FilterSet and cursor pages, as a page; each result names the role it would use."""
    roles = roles_requestable_by(request.user)
    queryset = resources_searchable_by(request.user, roles=roles)
    filterset = ResourceFilterSet(request.GET or None, queryset=queryset)
    results, problem = None, None
    if filterset.is_bound is False or filterset.is_valid():
        try:
            results = _search_page(request, filterset.qs, roles)
        except DomainError as error:
            problem = f"{error.field.capitalize() if error.field else 'Search'}: {error.message}"
    context = {
        "filterset": filterset,
        "results": results,
        "rows": results.rows if results else [],
        "problem": problem,
        "has_roles": bool(roles),
        "filtered": any(request.GET.get(key) for key in ("kind", "label", "search")),
        "label_value": ", ".join(request.GET.getlist("label")),
    }
    return render(request, "portal/resources.html", context, status=200 if results is not None else 400)


@login_required
def request_new(request: HttpRequest) -> HttpResponse:
    """The request form; what is requested comes from the query string (``?resource=…`` or ``?role=…``)."""
    refs = request.GET.getlist("resource")
    role_name = request.GET.get("role", "").strip()
    if not refs and not role_name:
        return render(request, "portal/request_start.html", {"roles": roles_requestable_by(request.user)})

    try:
        selection = selectors.request_selection(user=request.user, resource_refs=refs, role_name=role_name)
    except DomainError as error:
        return render(request, "portal/request_form.html", {"error": error.message}, status=400)
    context = {"selection": selection}

    reviewers = selectors.reviewers_eligible_for(roles=list(selection.roles), exclude=request.user)
    form = AccessRequestForm(
        request.POST if request.method == "POST" else None, selection=selection, reviewers=reviewers
    )
    context.update(
        form=form,
        reviewers=reviewers,
        approvals=selection.approvals_required,
        auto_approve=selection.auto_approve,
        resource_rows=[(r, selection.matches.get(r.pk, [])) for r in selection.resources],
        other_errors={},
    )
    if request.method != "POST":
        return render(request, "portal/request_form.html", context)

    if form.is_valid():
        try:
            created = services.request_create(
                requester=request.user,
                resources=list(selection.resources),
                roles=form.chosen_roles(),
                reason=form.cleaned_data["reason"],
                duration=form.cleaned_data["duration"],
                start_time=form.cleaned_data["start_time"],
                suggested_reviewers=form.chosen_reviewers(),
            )
        except DomainError as error:
            if error.field in form.fields:
                form.add_error(error.field, error.message)
            else:
                # resources / roles without a field of their own: shown beside the selection.
                context["other_errors"] = {error.field or "form": error.message}
        else:
            if created.break_glass:
                messages.success(
                    request, "Break-glass access granted. The role's reviewers have been told and will review it."
                )
            elif created.state == AccessRequest.State.APPROVED:
                messages.success(request, "Approved automatically by the role's policy; your access is ready.")
            else:
                messages.success(request, "Request sent. Reviewers have been asked; this page shows its progress.")
            return redirect("request-detail", pk=created.pk)
    return render(request, "portal/request_form.html", context, status=400)


@login_required
def request_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "")
    if state not in AccessRequest.State.values:
        state = ""
    page = _page(request, selectors.requests_of(user=request.user, state=state or None))
    context = {
        "page": page,
        "state": state,
        "states": AccessRequest.State.choices,
        "query": _query_without_page(request),
    }
    return render(request, "portal/request_list.html", context)


@login_required
def request_detail(request: HttpRequest, pk) -> HttpResponse:
    access_request = selectors.request_detail_get(user=request.user, pk=pk)
    if access_request is None:
        raise Http404("no such request")
    now = timezone.now()
    grants = list(access_request.grants.all())
    is_requester = access_request.requester_id == request.user.pk
    # How to connect: only to the grant's owner, only for SSH servers, only while the access check
    # honours the grant (two queries for all of them, none when no grant is a candidate).
    candidates = [g for g in grants if is_requester and g.resource_id and g.resource.kind == "node"]
    honoured = set(
        Grant.objects.honoured(at=now).filter(pk__in=[g.pk for g in candidates]).values_list("pk", flat=True)
        if candidates
        else ()
    )
    connect = [grant for grant in candidates if grant.pk in honoured]
    review_url = None
    state = access_request.state_at(now)
    if (
        state == AccessRequest.State.PENDING
        and capabilities.may_review_queue(request.user)
        and AccessRequest.objects.reviewable_by(request.user).filter(pk=access_request.pk).exists()
    ):
        review_url = reverse("admin:requests_app_accessrequest_change", args=[access_request.pk])
    extend_until = None
    if is_requester and state == AccessRequest.State.APPROVED:
        extend_until, _ = services.extension_offer(access_request, user=request.user, at=now)
    context = {
        "req": access_request,
        "extend_until": extend_until,
        "grants": grants,
        "now": now,
        "is_requester": is_requester,
        "can_cancel": is_requester and state == AccessRequest.State.PENDING,
        # Offered on the owner's live grants; the service decides again when it is confirmed.
        "droppable": {g.pk for g in grants if is_requester and g.revoked_at is None and g.expires_at > now},
        "connect": connect,
        "review_url": review_url,
        "grant_states": Grant.State,
    }
    return render(request, "portal/request_detail.html", context)


@login_required
@require_POST
def request_cancel(request: HttpRequest, pk) -> HttpResponse:
    access_request = AccessRequest.objects.visible_to(request.user).filter(pk=pk).first()
    if access_request is None:
        raise Http404("no such request")
    try:
        services.request_cancel(request=access_request, user=request.user, reason=request.POST.get("reason", ""))
    except DomainError as error:
        messages.error(request, f"Not cancelled: {error.message}.")
    else:
        messages.success(request, "Request cancelled.")
    return redirect("request-detail", pk=access_request.pk)


@login_required
def request_extend(request: HttpRequest, pk) -> HttpResponse:
    """*Extend*: more of an approved request's live access, as a new request reviewed like any other."""
    access_request = selectors.request_detail_get(user=request.user, pk=pk)
    if access_request is None:
        raise Http404("no such request")
    now = timezone.now()
    until, refusal = services.extension_offer(access_request, user=request.user, at=now)
    if refusal is not None:
        messages.error(request, f"Cannot extend: {refusal.message}.")
        return redirect("request-detail", pk=access_request.pk)
    form = ExtendForm(request.POST if request.method == "POST" else None, roles=list(access_request.roles.all()))
    if request.method == "POST" and form.is_valid():
        try:
            extension = services.request_extend(
                request=access_request,
                requester=request.user,
                duration=form.cleaned_data["duration"],
                reason=form.cleaned_data["reason"],
            )
        except DomainError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            if extension.state == AccessRequest.State.APPROVED:
                messages.success(request, "Extended automatically by the role's policy.")
            else:
                messages.success(
                    request, "Extension requested. Reviewers have been asked; it waits until your access ends."
                )
            return redirect("request-detail", pk=extension.pk)
    context = {"req": access_request, "form": form, "until": until, "now": now}
    return render(request, "portal/request_extend.html", context, status=400 if form.errors else 200)


def _drop_page(request: HttpRequest, *, access_request: AccessRequest, grants: list[Grant], action_url: str, drop):
    """Confirm (GET), then give back (POST) through ``drop(reason)``, which calls the drop service."""
    if request.method == "POST":
        try:
            drop(request.POST.get("reason", ""))
        except DomainError as error:
            messages.error(request, f"Not given back: {error.message}.")
        else:
            messages.success(request, "Access given back. It has ended, and its certificates are revoked.")
        return redirect("request-detail", pk=access_request.pk)
    now = timezone.now()
    live = [g for g in grants if g.revoked_at is None and g.expires_at > now]
    context = {"req": access_request, "grants": live, "action_url": action_url, "now": now}
    return render(request, "portal/drop_confirm.html", context)


@login_required
def request_drop(request: HttpRequest, pk) -> HttpResponse:
    """*Give access back* for every live grant of one's own request."""
    access_request = AccessRequest.objects.filter(requester=request.user, pk=pk).select_related("requester").first()
    if access_request is None:
        raise Http404("no such request")
    return _drop_page(
        request,
        access_request=access_request,
        grants=list(access_request.grants.select_related("role", "resource").order_by("pk")),
        action_url=reverse("request-drop", args=[pk]),
        drop=lambda reason: services.request_drop(request=access_request, user=request.user, reason=reason),
    )


@login_required
def grant_drop(request: HttpRequest, pk: int) -> HttpResponse:
    """*Give access back* for one of one's own grants."""
    grant = (
        Grant.objects.filter(user=request.user, pk=pk).select_related("request__requester", "role", "resource").first()
    )
    if grant is None:
        raise Http404("no such grant")
    return _drop_page(
        request,
        access_request=grant.request,
        grants=[grant],
        action_url=reverse("grant-drop", args=[pk]),
        drop=lambda reason: services.grant_drop(grant=grant, user=request.user, reason=reason),
    )
