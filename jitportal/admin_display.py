"""Presentation helpers every app's admin shares: list columns that fit a 1280 px screen."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.utils.html import format_html
from django.utils.text import Truncator

from jitportal.staff import STAFF_REFUSAL, may_configure

EMPTY = "—"


def clipped(text: str, limit: int = 40):
    """Free text for a list column: cut to ``limit`` characters, the whole of it on hover."""
    text = " ".join((text or "").split())
    if not text:
        return EMPTY
    if len(text) <= limit:
        return text
    return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(limit))


class RelatedOnlyFilterWithoutNone(admin.RelatedOnlyFieldListFilter):
    """Only the related rows the listed rows use, without the "-" entry (every request has a role)."""

    include_empty_choice = False

    def has_output(self) -> bool:
        # Shown even with one entry, so a reviewer sees which role the list is about.
        return bool(self.lookup_choices)


class RelatedFilterNoneNamed(admin.RelatedFieldListFilter):
    """A relation filter whose entry for rows with none says so ("(no group)") instead of "-"."""

    none_label = "(none)"

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.empty_value_display = self.none_label


class NoGroupFilter(RelatedFilterNoneNamed):
    none_label = "(no group)"


class NamedRefusalMixin:
    """A refused admin page says what is missing; Django's own refusal says nothing.

    ``refusal`` names it (e.g. "You need the audit capability."); the project's
    403 page shows it.
    """

    refusal = "You may not open this page."

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied(self.refusal)
        return super().changelist_view(request, extra_context=extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied(self.refusal)
        return super().change_view(request, object_id, form_url=form_url, extra_context=extra_context)

    def history_view(self, request, object_id, extra_context=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied(self.refusal)
        return super().history_view(request, object_id, extra_context=extra_context)


class GatedAdminMixin(NamedRefusalMixin):
    """A model admin that one predicate opens whole (see, add, change, delete) or not at all."""

    @staticmethod
    def may(user) -> bool:
        return False

    def has_module_permission(self, request) -> bool:
        return self.may(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return self.may(request.user)

    def has_add_permission(self, request, obj=None) -> bool:
        return self.may(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return self.may(request.user)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.may(request.user)


class ConfigurationAdminMixin(GatedAdminMixin):
    """Roles, resources and channels: the staff flag edits them, and gives nothing more."""

    may = staticmethod(may_configure)
    refusal = STAFF_REFUSAL
