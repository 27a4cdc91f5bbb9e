"""What a message about a request or grant says, before any platform's format."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.urls import NoReverseMatch, get_script_prefix, get_urlconf, reverse
from django.utils import timezone

from jitportal.durations import format_duration
from requests_app.models import AccessRequest, Grant, NotificationChannel

Event = NotificationChannel.Event
Kind = NotificationChannel.Kind

RESOURCES_SHOWN = 10
REASON_SHOWN = 1000

# --- what a message says ------------------------------------------------------------


@dataclass
class Message:
    """One event about one request (and maybe one grant), before any platform's format."""

    event: str
    title: str
    link: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""
    data: dict = field(default_factory=dict)


# reverse() cost more than the rest of a message; a path differs from the next only in the
# id, so each name is reversed once (per URLconf and script prefix) and the id filled in after.
_paths: dict[tuple, tuple[str, str]] = {}


def _path(name: str, pk: object) -> str:
    key = (settings.ROOT_URLCONF, get_urlconf(), get_script_prefix(), name)
    parts = _paths.get(key)
    if parts is None:
        path = reverse(name, args=[pk])
        before, found, after = path.partition(str(pk))
        if not found:
            return path
        parts = _paths[key] = (before, after)
    return f"{parts[0]}{pk}{parts[1]}"


def request_admin_url(access_request: AccessRequest) -> str:
    """The request in the reviewer queue, as a full link for messages sent out."""
    return f"{settings.JITPORTAL_BASE_URL}{_path('admin:requests_app_accessrequest_change', access_request.pk)}"


def request_page_url(access_request: AccessRequest) -> str:
    """The requester's own page for the request (the admin is for staff), else the admin's."""
    try:
        path = _path("request-detail", access_request.pk)
    except NoReverseMatch:
        return request_admin_url(access_request)
    return f"{settings.JITPORTAL_BASE_URL}{path}"


def request_extend_url(access_request: AccessRequest) -> str:
    """The requester's *Extend* page for the request, as a full link for reminders."""
    return f"{settings.JITPORTAL_BASE_URL}{_path('request-extend', access_request.pk)}"


def _extension_facts(access_request: AccessRequest, request_data: dict) -> list[tuple[str, str]]:
    """An extension says what it extends; reviewers decide on more of access already granted."""
    if access_request.extends_id is None:
        return []
    request_data["extends"] = str(access_request.extends_id)
    return [("Extends", f"request {access_request.extends_id}")]


def _extend_link(access_request: AccessRequest, facts: list, request_data: dict) -> str | None:
    try:
        link = request_extend_url(access_request)
    except NoReverseMatch:  # a URLconf without the portal pages
        return None
    facts.append(("Extend", link))
    request_data["extend_url"] = link
    return link


def _person(user) -> str:
    full = user.get_full_name()
    return f"{full} ({user.username})" if full else user.username


def _when(value: datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M %Z") if value else ""


def _resource_refs(access_request: AccessRequest) -> list[str]:
    return sorted(r.ref for r in access_request.resources.all())


def _summarise(refs: list[str]) -> str:
    if len(refs) > RESOURCES_SHOWN:
        return f"{', '.join(refs[:RESOURCES_SHOWN])} and {len(refs) - RESOURCES_SHOWN} more"
    return ", ".join(refs)


def truncate(text: str, limit: int = REASON_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _grant_target(grant: Grant) -> str:
    return grant.resource.ref if grant.resource_id else f"everything {grant.role.name} reaches"


def _request_facts(access_request: AccessRequest) -> tuple[str, list[tuple[str, str]], dict]:
    """What a request asks for: its one-line summary, its facts and its data."""
    roles = sorted(r.name for r in access_request.roles.all())
    refs = _resource_refs(access_request)
    what = f"{', '.join(roles)} on {_summarise(refs)}" if refs else f"{', '.join(roles)} (role-based)"
    data = {
        "roles": roles,
        "resources": refs,
        "start_time": access_request.start_time.isoformat() if access_request.start_time else None,
        "approvals_required": access_request.approvals_required,
        "pending_expires_at": access_request.pending_expires_at.isoformat(),
        "resolution_reason": access_request.resolution_reason,
    }
    facts = [
        ("Roles", ", ".join(roles)),
        ("Resources", _summarise(refs) if refs else "(role-based: everything the roles reach)"),
        ("Duration", format_duration(access_request.duration)),
    ]
    if access_request.start_time:
        facts.append(("Starts", _when(access_request.start_time)))
    return what, facts, data


def _headline(
    event: str,
    *,
    access_request: AccessRequest,
    grant: Grant | None,
    who: str,
    what: str,
    facts: list[tuple[str, str]],
    now: datetime,
) -> str:
    """The message's title for ``event``; adds the facts only that event has to ``facts``."""
    duration = format_duration(access_request.duration)
    resolution = access_request.resolution_reason
    match event:
        case Event.REQUEST_CREATED:
            asks = "asks to extend {} by {}" if access_request.extends_id else "requests {} for {}"
            title = f"{who} {asks.format(what, duration)}"
            facts.append(("Approvals needed", str(access_request.approvals_required)))
            facts.append(("Decide by", _when(access_request.pending_expires_at)))
        case Event.REQUEST_APPROVED:
            title = f"Approved: {who}'s request for {what}, {duration} of access"
            if resolution:
                facts.append(("Decision", resolution))
        case Event.REQUEST_DENIED:
            title = f"Denied: {who}'s request for {what}"
            if resolution:
                facts.append(("Decision", resolution))
        case Event.REQUEST_BREAK_GLASS:
            # The first announcement goes out as the request is made; later ones are the daily reminders.
            again = access_request.post_review_announced_at not in (None, access_request.created_at)
            prefix = "Still awaiting review" if again else "URGENT"
            title = f"{prefix}: {who} took break-glass access to {what} for {duration}; review it afterwards"
            facts.append(("Post-review", access_request.post_review or ""))
        case Event.REQUEST_EXPIRED:
            title = f"Expired: {who}'s request for {what} was not decided in time"
        case Event.GRANT_EXPIRING:
            left = format_duration(max(grant.expires_at - now, timedelta(seconds=1)))
            title = f"Ending in {left}: {who}'s access to {what}"
        case Event.GRANT_ENDED if grant.revoked_at is not None and grant.revoked_by_id == grant.user_id:
            title = f"Given back: {who}'s access to {what}"
        case Event.GRANT_ENDED if grant.revoked_at is not None:
            by = grant.revoked_by.username if grant.revoked_by_id else "staff"
            title = f"Revoked: {who}'s access to {what} (by {by})"
            facts.append(("Revoke reason", grant.revoke_reason))
        case Event.GRANT_ENDED:
            title = f"Ended: {who}'s access to {what}"
        case _:
            raise ValueError(f"unknown event {event!r}")
    return title


def build_message(*, event: str, access_request: AccessRequest, grant: Grant | None, now: datetime) -> Message:
    """Who, what, why, how long, and the link: the same facts for every platform."""
    requester = access_request.requester
    who = _person(requester)
    admin_link = request_admin_url(access_request)
    # Reviewers act in the admin queue; requesters read their own page.
    link = (
        admin_link if event in (Event.REQUEST_CREATED, Event.REQUEST_BREAK_GLASS) else request_page_url(access_request)
    )
    request_data = {
        "id": str(access_request.pk),
        "url": admin_link,
        "requester": requester.username,
        "reason": access_request.reason,
        "state": access_request.state,
        "duration": int(access_request.duration.total_seconds()),
        "break_glass": access_request.break_glass,
        "post_review": access_request.post_review,
    }
    facts: list[tuple[str, str]] = [("Requester", who), *_extension_facts(access_request, request_data)]
    if grant is None:
        what, request_facts, more_data = _request_facts(access_request)
        facts += request_facts
        request_data |= more_data
    else:
        what = f"{_grant_target(grant)} ({grant.role.name})"
        facts += [
            ("Access", what),
            ("Until", _when(grant.expires_at)),
        ]

    title = _headline(event, access_request=access_request, grant=grant, who=who, what=what, facts=facts, now=now)
    if event == Event.GRANT_EXPIRING:
        # The reminder's link is where the requester asks for more time.
        link = _extend_link(access_request, facts, request_data) or link

    data = {
        "event": event,
        "occurred_at": now.isoformat(),
        "text": title,
        "link": link,
        "request": request_data,
        "grant": None,
    }
    if grant is not None:
        data["grant"] = {
            "id": grant.pk,
            "role": grant.role.name,
            "resource": grant.resource.ref if grant.resource_id else None,
            "starts_at": grant.starts_at.isoformat(),
            "expires_at": grant.expires_at.isoformat(),
            "revoked_at": grant.revoked_at.isoformat() if grant.revoked_at else None,
        }
    return Message(event=event, title=title, link=link, facts=facts, reason=truncate(access_request.reason), data=data)
