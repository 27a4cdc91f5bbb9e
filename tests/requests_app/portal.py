"""Helpers shared by the portal page tests and the admin queue tests."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from requests_app.models import AccessRequest
from requests_app.services import request_create, request_review
from tests.conftest import make_resource


def grant_review_permission(user: User, *, staff: bool = False) -> User:
    """A reviewer needs nothing but a reviewer group (the staff flag is optional); fresh object."""
    user.is_staff = staff
    user.save(update_fields=["is_staff"])
    return User.objects.get(pk=user.pk)


def queries_for(client, url: str, params: dict | None = None, *, status: int = 200) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params or {})
    assert response.status_code == status, response.status_code
    return len(captured), response


def pending_requests(n: int, *, requester, role, resources, reason: str = "INC-1") -> list[AccessRequest]:
    return [request_create(requester=requester, resources=resources, roles=[role], reason=reason) for _ in range(n)]


def approved_request(*, requester, reviewers, role, resources, reason: str = "INC-1", duration="30m") -> AccessRequest:
    access_request = request_create(
        requester=requester, resources=resources, roles=[role], reason=reason, duration=duration
    )
    for reviewer in reviewers:
        request_review(request=access_request, reviewer=reviewer, decision="approve", reason="ok")
    access_request.refresh_from_db()
    assert access_request.state == AccessRequest.State.APPROVED
    return access_request


def many_resources(n: int, *, prefix: str, labels: dict | None = None, kind: str = "node") -> list:
    return [make_resource(f"{prefix}-{i:03d}", kind=kind, labels=labels or {"env": "prod"}) for i in range(n)]
