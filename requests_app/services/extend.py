"""Extending a request: the extension rules and ``request_extend``."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Q, prefetch_related_objects
from django.utils import timezone

from accounts.selectors import roles_requestable_by
from audit.services import audit_record
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from requests_app.models import AccessRequest
from requests_app.notifications.messages import Event
from requests_app.notifications.outbox import notify
from requests_app.preview import request_preview
from requests_app.services._common import _approve, _chain_live_ends, _clean_reason, _lock, _nothing_to_extend

# --- extend -----------------------------------------------------------------


def extensions_used(root: AccessRequest, *, at: datetime) -> int:
    """Extensions that count against ``max_extensions``: pending (still within their time to live) and approved."""
    return (
        AccessRequest.objects.filter(extends_id=root.pk)
        .filter(Q(state=AccessRequest.State.APPROVED) | Q(state=AccessRequest.State.PENDING, pending_expires_at__gt=at))
        .count()
    )


def extension_refusal(root: AccessRequest, *, user, at: datetime, live: bool, used: int) -> DomainError | None:
    """Why ``user`` may not extend ``root`` (the first request of its chain) now, or None.

    The one rule behind the service and the pages' *Extend* offer; ``live``
    is whether any grant of the chain is still live, ``used`` how many
    extensions count (``extensions_used``).
    """
    if root.requester_id != user.pk:
        return PermissionRefused("only the requester can extend a request", field="request")
    state = root.state_at(at)
    if state != AccessRequest.State.APPROVED:
        return StateConflict(f"the request is {state}; only approved access can be extended", code="not_approved")
    if not live:
        return _nothing_to_extend()
    roles = list(root.roles.all())
    limit = min(r.max_extensions for r in roles)
    if used >= limit:
        strictest = min(roles, key=lambda r: r.max_extensions)
        allowed = "no extension" if limit == 0 else f"at most {limit} extension{'s' if limit != 1 else ''}"
        return StateConflict(f"role {strictest.name} allows {allowed} of a request", code="max_extensions")
    return None


def extension_offer(access_request: AccessRequest, *, user, at: datetime) -> tuple[datetime | None, DomainError | None]:
    """When the live access ``user`` could extend from ``access_request`` ends, or why it cannot be extended.

    For the pages: at most four queries, whatever the chain holds. The service decides again when asked.
    """
    root = access_request
    if access_request.extends_id is not None:
        root = AccessRequest.objects.prefetch_related("roles").get(pk=access_request.extends_id)
    ends = _chain_live_ends(root.pk, at)
    used = extensions_used(root, at=at) if ends else 0
    refusal = extension_refusal(root, user=user, at=at, live=bool(ends), used=used)
    return (None, refusal) if refusal is not None else (max(ends.values()), None)


def request_extend(
    *, request: AccessRequest, requester, duration: object = None, reason: str = "", now: datetime | None = None
) -> AccessRequest:
    """Ask for more of the access an approved request gave, while some of it is still live.

    The extension is a new request (``extends``: the first request of the
    chain, also when an extension is extended) with the same roles and
    resources, checked and reviewed by the same rules as a new request; its
    time to live ends with the live access it would extend. Once approved it
    adds a grant from the end of each still-live grant (``_approve``). The
    chain's first request is locked, so two extensions at once are counted
    one after the other.
    """
    reason = _clean_reason(reason)
    with transaction.atomic():
        root = _lock(AccessRequest(pk=request.extends_id or request.pk))
        at = now or timezone.now()
        prefetch_related_objects([root], "roles", "resources")
        ends = _chain_live_ends(root.pk, at)
        refusal = extension_refusal(
            root, user=requester, at=at, live=bool(ends), used=extensions_used(root, at=at) if ends else 0
        )
        if refusal is not None:
            raise refusal
        if not requester.is_active:
            raise PermissionRefused("your account is not active")
        roles, resources = list(root.roles.all()), list(root.resources.all())
        # The same checks as a new request: still eligible for the roles, the reason, the cap.
        preview = request_preview(requestable=roles_requestable_by(requester), resources=resources, roles=roles)
        preview.reason_check(reason)
        value = preview.duration(duration)
        extension = AccessRequest.objects.create(
            requester=requester,
            extends=root,
            reason=reason,
            duration=value,
            created_at=at,
            pending_expires_at=min(at + preview.pending_ttl, max(ends.values())),
            approvals_required=preview.approvals_required,
            denials_required=preview.denials_required,
        )
        extension.roles.add(*roles)
        if resources:
            extension.resources.add(*resources)
        extension.hold(roles=roles, resources=resources, suggested_reviewers=[])
        audit_record(
            action="request.extended",
            actor=requester,
            target=extension,
            data={
                "extends": str(root.pk),
                "roles": [r.name for r in roles],
                "resources": [r.ref for r in resources],
                "reason": reason,
                "duration": int(value.total_seconds()),
                "pending_expires_at": extension.pending_expires_at.isoformat(),
            },
        )
        if preview.auto_approve:
            _approve(extension, at=at, resolution="auto-approved by role policy", actor=requester, auto=True)
        else:
            notify(event=Event.REQUEST_CREATED, access_request=extension)
    return extension
