"""Creating a request: ``request_create``."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Role
from accounts.selectors import resources_searchable_by, reviewers_of, roles_requestable_by
from audit.services import audit_record
from inventory.models import Resource
from inventory.selectors import resources_resolve
from jitportal.durations import format_duration
from jitportal.errors import DomainError, PermissionRefused
from requests_app.models import AccessRequest
from requests_app.notifications.messages import Event
from requests_app.notifications.outbox import notify
from requests_app.preview import request_preview
from requests_app.services._common import CLOCK_SKEW, _approve, _clean_reason
from requests_app.services.break_glass import _break_glass

# --- create -----------------------------------------------------------------


def _resolve_start(start_time: datetime | None, now: datetime) -> datetime | None:
    if start_time is None:
        return None
    if timezone.is_naive(start_time):
        raise DomainError("must include a time zone (e.g. 2026-01-01T09:00:00Z)", field="start_time")
    if start_time < now - CLOCK_SKEW:
        raise DomainError("is in the past", field="start_time")
    if start_time > now + settings.JITPORTAL_MAX_START_AHEAD:
        raise DomainError(
            f"is more than {format_duration(settings.JITPORTAL_MAX_START_AHEAD)} ahead", field="start_time"
        )
    return start_time


def _suggested_reviewers(suggested: list, *, roles: list[Role], requester) -> list:
    """The users named (usernames, or users), each of whom must be an eligible reviewer of ``roles``.

    An unknown name, an inactive user and one who may not review these roles
    get the same answer, so it never tells which users exist.
    """
    names = list(dict.fromkeys(getattr(u, "username", u) for u in suggested))
    if requester.username in names:
        raise DomainError("you cannot suggest yourself as a reviewer", field="suggested_reviewers")
    if not names:
        return []
    eligible = {u.username: u for u in reviewers_of(roles).filter(username__in=names).exclude(pk=requester.pk)}
    refused = [str(name) for name in names if name not in eligible]
    if refused:
        raise DomainError(
            f"not an eligible reviewer of the requested roles: {', '.join(refused)}", field="suggested_reviewers"
        )
    return [eligible[name] for name in names]


def _roles_named(roles: list, requestable: list[Role]) -> list[Role]:
    """Roles given as objects or names; a name the requester may not request reads as one that does not exist."""
    by_name = {role.name: role for role in requestable}
    missing = [role for role in roles if isinstance(role, str) and role not in by_name]
    if missing:
        raise DomainError(f"no such role: {', '.join(missing)}", field="roles")
    return [by_name[role] if isinstance(role, str) else role for role in roles]


def _resources_named(resources: list, *, requester, requestable: list[Role]) -> list[Resource]:
    """Resources given as objects, or references (ids, ``kind/name``) looked up among those the requester may search.

    A reference to a resource the requester may not search is answered
    exactly like one to a resource that does not exist.
    """
    if all(isinstance(resource, Resource) for resource in resources):
        return resources
    refs = [resource.pk if isinstance(resource, Resource) else resource for resource in resources]
    return resources_resolve(refs, queryset=resources_searchable_by(requester, roles=requestable))


def request_create(
    *,
    requester,
    resources: list[Resource | str | int] | None = None,
    roles: list[Role | str] | None = None,
    reason: str = "",
    duration: object = None,
    start_time: datetime | None = None,
    suggested_reviewers: list | None = None,
    now: datetime | None = None,
) -> AccessRequest:
    """Create a request for roles, or for resources (roles picked when not named).

    ``roles`` are roles or their names, ``resources`` resources or references
    to them (ids, ``kind/name``), looked up among what the requester may
    request and search. ``suggested_reviewers`` are usernames (or users) of
    eligible reviewers of the roles.

    A request whose roles are all break-glass is approved at once and awaits
    its review afterwards (``post_review``); one whose roles all auto-approve
    is approved at once (still audited); no other path creates an approved request. The request returned holds its
    roles, resources and suggested reviewers as written, so reading them
    costs no query.
    """
    now = now or timezone.now()
    if not requester.is_active:
        raise PermissionRefused("your account is not active")
    requestable = roles_requestable_by(requester)
    preview = request_preview(
        requestable=requestable,
        resources=_resources_named(resources or [], requester=requester, requestable=requestable),
        roles=_roles_named(roles or [], requestable),
    )
    request_roles, request_resources = list(preview.roles), list(preview.resources)
    reason = _clean_reason(reason)
    preview.reason_check(reason)
    value = preview.duration(duration)
    start = _resolve_start(start_time, now)
    reviewers = _suggested_reviewers(suggested_reviewers or [], roles=request_roles, requester=requester)

    with transaction.atomic():
        access_request = AccessRequest.objects.create(
            requester=requester,
            reason=reason,
            duration=value,
            start_time=start,
            created_at=now,
            pending_expires_at=now + preview.pending_ttl,
            approvals_required=preview.approvals_required,
            denials_required=preview.denials_required,
        )
        # add(), not set(): a new request has no rows to compare with, so each is one INSERT.
        access_request.roles.add(*request_roles)
        if request_resources:
            access_request.resources.add(*request_resources)
        if reviewers:
            access_request.suggested_reviewers.add(*reviewers)
        # Never changed once written, so held on the request returned: reading them costs no query.
        # In the order a read gives them (each model's ordering; names compared as the C collation does).
        access_request.hold(
            roles=sorted(request_roles, key=lambda r: r.name),
            resources=sorted(request_resources, key=lambda r: (r.kind, r.name)),
            suggested_reviewers=sorted(reviewers, key=lambda u: u.username),
        )
        audit_record(
            action="request.created",
            actor=requester,
            target=access_request,
            data={
                "roles": [r.name for r in request_roles],
                "resources": [r.ref for r in request_resources],
                "reason": reason,
                "duration": int(value.total_seconds()),
                "start_time": start.isoformat() if start else None,
                "suggested_reviewers": [u.username for u in reviewers],
            },
        )
        if preview.break_glass:
            _break_glass(access_request, at=now)
        elif preview.auto_approve:
            _approve(access_request, at=now, resolution="auto-approved by role policy", actor=requester, auto=True)
        else:
            notify(event=Event.REQUEST_CREATED, access_request=access_request)
    return access_request
