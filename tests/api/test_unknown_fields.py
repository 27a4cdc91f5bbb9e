"""A field the API does not know is a 400 naming it, on every input, and changes nothing.

A typo such as ``"durration"`` used to be dropped in silence, and the default
(one hour) used instead.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiToken
from audit.models import AuditEvent
from requests_app import services
from requests_app.models import AccessRequest, Grant, IssuedCertificate, Review
from tests.conftest import make_role, make_user
from tests.ssh.keys import ed25519_key, openssh_public

REQUESTS = "/api/v1/requests/"


@pytest.fixture
def web_ssh(db):
    return make_role("web-ssh", approvals=1)


@pytest.fixture
def pending(requester, web_ssh, web1) -> AccessRequest:
    return services.request_create(requester=requester, resources=[web1], reason="INC-1")


@pytest.fixture
def grant(pending, reviewer) -> Grant:
    services.request_review(request=pending, reviewer=reviewer, decision="approve")
    return pending.grants.get()


@pytest.fixture
def superuser(db):
    return make_user("root", is_staff=True, is_superuser=True)


def test_a_misspelt_duration_is_refused_not_defaulted(api, requester, web_ssh, web1):
    body = {"resources": ["node/web-1"], "reason": "INC-1", "durration": "2h"}

    response = api(requester).post(REQUESTS, body)

    assert response.status_code == 400
    assert response.json() == {"durration": ["Unknown field."]}
    assert not AccessRequest.objects.exists()


def test_every_unknown_field_is_named(api, requester, web_ssh, web1):
    body = {"resources": ["node/web-1"], "reason": "INC-1", "durration": "2h", "reviewer": "bob"}

    response = api(requester).post(REQUESTS, body)

    assert response.status_code == 400
    assert response.json() == {"durration": ["Unknown field."], "reviewer": ["Unknown field."]}


def test_review_with_an_unknown_field_records_nothing(api, reviewer, pending):
    response = api(reviewer).post(f"{REQUESTS}{pending.pk}/reviews/", {"decision": "approve", "comment": "ok"})

    assert response.status_code == 400
    assert response.json() == {"comment": ["Unknown field."]}
    assert not Review.objects.exists()
    pending.refresh_from_db()
    assert pending.state == AccessRequest.State.PENDING


def test_cancel_with_an_unknown_field_cancels_nothing(api, requester, pending):
    response = api(requester).post(f"{REQUESTS}{pending.pk}/cancel/", {"reasn": "done"})

    assert response.status_code == 400
    assert response.json() == {"reasn": ["Unknown field."]}
    pending.refresh_from_db()
    assert pending.state == AccessRequest.State.PENDING


def test_revoke_with_an_unknown_field_revokes_nothing(api, superuser, grant):
    response = api(superuser).post(f"/api/v1/grants/{grant.pk}/revoke/", {"reason": "left", "force": True})

    assert response.status_code == 400
    assert response.json() == {"force": ["Unknown field."]}
    grant.refresh_from_db()
    assert grant.revoked_at is None


def test_certificate_with_an_unknown_field_signs_nothing(api, requester, grant):
    body = {"public_key": openssh_public(ed25519_key()), "valid_for": 3600}

    response = api(requester).post(f"/api/v1/grants/{grant.pk}/certificate/", body)

    assert response.status_code == 400
    assert response.json() == {"valid_for": ["Unknown field."]}
    assert not IssuedCertificate.objects.exists()


def test_token_with_an_unknown_field_issues_no_token(requester):
    body = {"username": "alice", "password": "pw-correct-horse", "expiry": "never"}

    response = APIClient().post("/api/v1/auth/token/", body, format="json")

    assert response.status_code == 400
    assert response.json() == {"expiry": ["Unknown field."]}
    assert not ApiToken.objects.exists()
    assert not AuditEvent.objects.filter(action="token.created").exists()


def test_known_fields_still_work(api, requester, web_ssh, web1):
    body = {"resources": ["node/web-1"], "roles": [], "reason": "INC-1", "duration": "30m", "suggested_reviewers": []}

    response = api(requester).post(REQUESTS, body)

    assert response.status_code == 201, response.content
    assert response.json()["duration"] == 1800


def test_a_form_post_may_carry_the_csrf_token(api, requester, pending):
    """The browsable API posts forms with Django's CSRF token: not an unknown field."""
    body = {"reason": "done", "csrfmiddlewaretoken": "x" * 64}

    response = api(requester).post(f"{REQUESTS}{pending.pk}/cancel/", body, format="multipart")

    assert response.status_code == 200, response.content
    assert response.json()["state"] == "cancelled"
