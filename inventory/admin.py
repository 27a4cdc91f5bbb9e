"""The inventory in the admin: labels are edited as JSON and kept in step with their index rows."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from inventory.models import Resource, text_q
from inventory.services import resource_set_labels, validate_labels
from jitportal.admin_display import ConfigurationAdminMixin, clipped
from jitportal.errors import DomainError


def format_labels(labels: dict | None) -> str:
    """``{"env": "prod", "team": "web"}`` -> ``env=prod, team=web`` (sorted by key)."""
    return ", ".join(f"{key}={value}" for key, value in sorted((labels or {}).items()))


class ResourceAdminForm(forms.ModelForm):
    class Meta:
        model = Resource
        fields = ("kind", "name", "address", "labels", "description")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["labels"].help_text = 'A JSON object of key to value, e.g. {"env": "prod", "team": "web"}.'

    def clean_labels(self) -> dict[str, str]:
        # The same rule as every other write path (API, policy loader).
        try:
            return validate_labels(self.cleaned_data.get("labels"))
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from exc


@admin.register(Resource)
class ResourceAdmin(ConfigurationAdminMixin, admin.ModelAdmin):
    form = ResourceAdminForm
    list_display = ("kind", "name", "address", "labels_display", "updated_at")
    list_display_links = ("kind", "name")
    list_filter = ("kind",)
    search_fields = ("name", "address", "description")
    readonly_fields = ("created_at", "updated_at")
    fields = ("kind", "name", "address", "labels", "description", "created_at", "updated_at")

    # Searching does not also count every resource (a full scan on a large inventory).
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        # The search page's and the API's text search, from the same index.
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(text_q(term)), False

    @admin.display(description="labels")
    def labels_display(self, obj: Resource) -> str:
        return clipped(format_labels(obj.labels), 60)

    def save_model(self, request, obj: Resource, form, change: bool) -> None:
        # The admin already wraps the save in a transaction; the index rows
        # commit or roll back with the resource.
        super().save_model(request, obj, form, change)
        resource_set_labels(resource=obj, labels=obj.labels)
