"""Read-only admin base classes and the helpers the queue and grant actions share."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import models
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from accounts import capabilities
from jitportal.admin_display import NamedRefusalMixin
from jitportal.errors import DomainError
from requests_app.models import AccessRequest

# One page of the queue; also bounds what a confirmation page lists by name.
QUEUE_PAGE = 100


def asked(request: HttpRequest, predicate) -> bool:
    """``predicate(request.user)``, asked once per request.

    One admin page asks the same capability for every model in the sidebar and
    every check on the way; the answer cannot change while the page is built,
    and each ask is a query.
    """
    answers = request.__dict__.setdefault("_capability_answers", {})
    if predicate not in answers:
        answers[predicate] = predicate(request.user)
    return answers[predicate]


class ReadOnlyAdminMixin(NamedRefusalMixin):
    """History is not editable: no add, change or delete for anyone.

    Who may look is one capability predicate per admin class (``may_view``),
    asked for the admin index and for every page alike; ``refusal`` names it.
    """

    may_view = staticmethod(capabilities.may_audit)
    refusal = capabilities.refusal(capabilities.Capability.AUDIT)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return asked(request, self.may_view)


class ReadOnlyModelAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    def has_module_permission(self, request) -> bool:
        return asked(request, self.may_view)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


class DerivedStateFilter(admin.SimpleListFilter):
    """A state filter read from the timestamps (the model's ``in_state``), never the stored column alone.

    Subclasses name the model's ``State`` choices.
    """

    title = "state"
    parameter_name = "state"
    states: type[models.TextChoices]

    def lookups(self, request, model_admin):
        return self.states.choices

    def queryset(self, request, queryset):
        if self.value() not in self.states.values:
            return queryset
        return queryset.in_state(self.value(), at=timezone.now())


def short_id(pk) -> str:
    return str(pk)[:8]


def change_link(obj, text: str):
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text)


def request_label(access_request: AccessRequest) -> str:
    return f"{access_request.requester.username}'s request {short_id(access_request.pk)}"


def safe_next(request: HttpRequest, candidate: str | None, default: str) -> str:
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


def parse_ids(raw_ids: list[str], parse) -> tuple[list[tuple[str, object]], list]:
    """(raw, parsed-or-None) in the order given, duplicates dropped; and the parsed values."""
    pairs = []
    for raw in dict.fromkeys(raw_ids):
        try:
            pairs.append((raw, parse(raw)))
        except (TypeError, ValueError):
            pairs.append((raw, None))
    return pairs, [value for _, value in pairs if value is not None]


def selected_ids(request: HttpRequest, queryset) -> list[str]:
    """What the reviewer ticked, even rows the current filter no longer holds (they are then reported)."""
    if request.POST.get("select_across") == "1":
        return [str(pk) for pk in queryset.values_list("pk", flat=True)]
    return request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)


def listing(items: list[str], shown: int = 10) -> str:
    """Successes in one message: a bulk action over hundreds of rows must not flood the page."""
    text = "; ".join(items[:shown])
    return f"{text}; and {len(items) - shown} more" if len(items) > shown else text


def count_of(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def confirmation(
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


def apply_each(request, form, pairs, found, *, act, label, missing) -> list | None:
    """Run ``act`` on each selected object through its service; refusals are reported one by one.

    Returns the objects done, or None when the form's own input (the reason)
    was refused: that is refused for every item, so it is said once, beside
    the field, and the page is shown again.
    """
    done = []
    for raw, pk in pairs:
        obj = found.get(pk)
        if obj is None:
            messages.error(request, missing(raw))
            continue
        try:
            act(obj)
        except DomainError as error:
            if error.field in form.fields and not done:
                form.add_error(error.field, error.message)
                return None
            messages.error(request, f"{label(obj)}: {error.message}.")
            continue
        done.append(obj)
    return done
