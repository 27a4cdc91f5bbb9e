"""Input fields shared by the API, the filters and the pages.

Python accepts some values that PostgreSQL refuses, and a query that
PostgreSQL refuses is a server error; these fields turn such input into an
error on the field instead, the same on every database.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import django_filters
from django import forms
from django.utils.dateparse import parse_datetime
from django_filters.fields import IsoDateTimeField
from rest_framework import serializers

# PostgreSQL's bound for a time-zone displacement (MAX_TZDISP_HOUR); Python allows up to ±23:59.
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59, seconds=59)
UTC_OFFSET_MESSAGE = "the time-zone offset must be between -15:59 and +15:59"


def utc_offset_supported(value: datetime) -> bool:
    """False for an aware datetime whose offset the database cannot store (``+19:38``)."""
    offset = value.utcoffset()
    return offset is None or abs(offset) <= MAX_UTC_OFFSET


class DateTimeFormField(forms.DateTimeField):
    """A form's date and time, refusing an offset the database cannot store."""

    def to_python(self, value):
        result = super().to_python(value)
        if result is not None and not utc_offset_supported(result):
            raise forms.ValidationError(UTC_OFFSET_MESSAGE, code="invalid")
        return result


class IsoDateTimeFormField(DateTimeFormField, IsoDateTimeField):
    pass


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = IsoDateTimeFormField


class DateTimeField(serializers.DateTimeField):
    """The API's date and time input: as DRF's, refusing an offset the database cannot store."""

    def to_internal_value(self, value):
        # Checked before DRF converts to the current zone, so the rule is the same as the forms'.
        parsed = value
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None  # DRF's own parsing names the error
        if isinstance(parsed, datetime) and not utc_offset_supported(parsed):
            raise serializers.ValidationError(UTC_OFFSET_MESSAGE, code="invalid")
        return super().to_internal_value(value)
