"""``{% load capabilities %}`` ... ``{% if user|may:"review_queue" %}``: the predicates, for templates."""

from __future__ import annotations

from django import template

from accounts import capabilities

register = template.Library()

_PREDICATES = {
    "audit": capabilities.may_audit,
    "revoke": capabilities.may_revoke,
    "review_queue": capabilities.may_review_queue,
    "configure": capabilities.may_configure,
    "open_admin": capabilities.may_open_admin,
}


@register.filter
def may(user, what: str) -> bool:
    return _PREDICATES[what](user)
