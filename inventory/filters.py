"""The one resource FilterSet, shared by the API and the search page."""

from __future__ import annotations

import django_filters
from django import forms
from drf_spectacular.utils import extend_schema_field

from inventory.models import Resource, text_q

# The shortest text a trigram index serves.
TRIGRAM = 3


class LabelSelectorField(forms.Field):
    """``env=prod`` (repeatable, or comma-separated); ``key`` alone means the label is present."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        if not value:
            return []
        if isinstance(value, str):
            value = [value]
        pairs: list[tuple[str, str | None]] = []
        for item in value:
            for part in str(item).split(","):
                part = part.strip()
                if not part:
                    continue
                key, sep, val = part.partition("=")
                key = key.strip()
                if not key:
                    raise forms.ValidationError(f"{part!r} is not a label selector; use key=value")
                pairs.append((key, val.strip() if sep else None))
        return pairs


class SearchTextField(forms.CharField):
    """Text to find in a name, address or description; one line, so it never spans two of them."""

    def clean(self, value):
        value = super().clean(value)
        if value and any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise forms.ValidationError("must be one line of text, without control characters")
        return value


class SearchFilter(django_filters.CharFilter):
    field_class = SearchTextField


@extend_schema_field({"type": "array", "items": {"type": "string"}, "description": "key=value; repeatable"})
class LabelFilter(django_filters.Filter):
    field_class = LabelSelectorField

    def filter(self, qs, value):
        by_row = getattr(self.parent, "text_narrows", False)
        for key, val in value or []:
            qs = qs.with_label(key, val, by_row=by_row)
        return qs


class ResourceFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=Resource.Kind.choices)
    label = LabelFilter(label="Labels (key=value)")
    search = SearchFilter(method="filter_search", label="Text")

    class Meta:
        model = Resource
        fields = ["kind", "label", "search"]

    def filter_queryset(self, queryset):
        # A text search of three characters or more is served by the trigram index, which
        # leaves few rows; the labels are then best tested on those rows (models.label_q).
        text = (self.form.cleaned_data.get("search") or "").strip()
        self.text_narrows = len(text) >= TRIGRAM
        return super().filter_queryset(queryset)

    def filter_search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(text_q(value))
