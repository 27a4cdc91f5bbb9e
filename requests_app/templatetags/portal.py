"""Small filters for the portal pages."""

from __future__ import annotations

from datetime import timedelta

from django import template

from jitportal.durations import duration_label

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    """``timedelta(minutes=90)`` -> ``1 hour 30 min``."""
    return duration_label(value) if value else ""


@register.filter
def labels(value: dict | None) -> list[tuple[str, str]]:
    """A resource's labels as sorted pairs, so chips read the same on every page."""
    return sorted((value or {}).items())


@register.filter
def more_resources(access_request) -> int:
    """How many resources a summarised request has beyond the few it carries (``first_resources``)."""
    shown = len(getattr(access_request, "first_resources", []))
    return max((getattr(access_request, "resource_count", 0) or 0) - shown, 0)
