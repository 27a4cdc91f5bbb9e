"""``review_requires_mfa``: every path to a review of such a role needs a second factor verified in 15 minutes.

The rule is ``services.review_refusal``'s; the service, the admin (a redirect
to the verification and back) and the API (session or token) all reach it.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import mfa
from accounts.services import token_create
from audit.models import AuditEvent
from jitportal.errors import PermissionRefused
from requests_app.models import AccessRequest, Review
from requests_app.services import request_create, request_review, review_refusal
from tests.conftest import make_role
from tests.requests_app.portal import grant_review_permission

pytestmark = pytest.mark.django_db

REVIEW = reverse("admin:requests_app_accessrequest_review")
VERIFY = reverse("mfa-verify")


@pytest.fixture
def guarded(db):
    return make_role("prod-root", approvals=1, review_requires_mfa=True)


@pytest.fixture
def pending(requester, guarded, web1) -> AccessRequest:
    return request_create(requester=requester, resources=[web1], roles=[guarded], reason="INC-9 root needed")


def enrol(user) -> pyotp.TOTP:
    device, _ = mfa.totp_begin(user=user, verified_at=None)
    totp = pyotp.TOTP(device.secret)
    mfa.totp_confirm(user=user, code=totp.at(timezone.now() - timedelta(seconds=30)), verified_at=None)
    return totp


# --- the service ------------------------------------------------------------------------------


def test_a_review_without_a_verification_is_refused_and_audited(pending, reviewer):
    with pytest.raises(PermissionRefused) as refused:
        request_review(request=pending, reviewer=reviewer, decision="approve")
    assert refused.value.code == "mfa_required" and refused.value.status_code == 403
    assert not Review.objects.exists()
    assert AuditEvent.objects.filter(action="review.refused_mfa", actor_username="bob").count() == 1


def test_a_verification_older_than_fifteen_minutes_is_refused(pending, reviewer):
    stale = timezone.now() - timedelta(minutes=15, seconds=5)
    with pytest.raises(PermissionRefused, match="second factor"):
        request_review(request=pending, reviewer=reviewer, decision="approve", mfa_verified_at=stale)


def test_a_fresh_verification_reviews(pending, reviewer):
    fresh = timezone.now() - timedelta(minutes=14)
    request_review(request=pending, reviewer=reviewer, decision="approve", mfa_verified_at=fresh)
    pending.refresh_from_db()
    assert pending.state == AccessRequest.State.APPROVED


def test_roles_without_the_flag_need_no_second_factor(requester, reviewer, prod_ssh, web1):
    made = request_create(requester=requester, resources=[web1], reason="INC-1")
    request_review(request=made, reviewer=reviewer, decision="approve")
    assert made.reviews.count() == 1


def test_other_refusals_come_first(pending, requester):
    # One's own request stays "self", whatever the second factor.
    refusal = review_refusal(pending, requester, at=timezone.now())
    assert refusal is not None and refusal.code == "self"


# --- the admin --------------------------------------------------------------------------------


def test_admin_review_redirects_to_verify_and_back(client, pending, reviewer):
    totp = enrol(reviewer)
    client.force_login(grant_review_permission(reviewer))
    # Confirming marked the session once; make it stale, as after a while.
    session = client.session
    session["mfa_verified_at"] = (timezone.now() - timedelta(minutes=20)).isoformat()
    session.save()

    page = client.get(REVIEW, {"decision": "approve", "ids": [str(pending.pk)]})
    assert page.status_code == 302 and page["Location"].startswith(f"{VERIFY}?next=")
    back = parse_qs(urlsplit(page["Location"]).query)["next"][0]
    assert back.startswith(REVIEW) and str(pending.pk) in back

    # A POST without verifying is refused by the service, nothing reviewed.
    client.post(REVIEW, {"decision": "approve", "ids": [str(pending.pk)], "reason": "ok"})
    assert not Review.objects.exists()

    verified = client.post(VERIFY, {"code": totp.now(), "next": back})
    assert verified["Location"] == back
    confirm = client.get(back)
    assert confirm.status_code == 200
    assert "needs a second factor" not in confirm.content.decode()
    done = client.post(REVIEW, {"decision": "approve", "ids": [str(pending.pk)], "reason": "ok"})
    assert done.status_code == 302
    assert Review.objects.get().reviewer == reviewer


def test_admin_change_page_says_a_second_factor_is_needed(client, pending, reviewer):
    client.force_login(grant_review_permission(reviewer))
    url = reverse("admin:requests_app_accessrequest_change", args=[pending.pk])
    assert "needs a second factor verified in the last 15 minutes" in client.get(url).content.decode()


# --- the API ----------------------------------------------------------------------------------


def review_with_token(secret: str, access_request):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client.post(f"/api/v1/requests/{access_request.pk}/reviews/", {"decision": "approve", "reason": "ok"})


def test_api_token_without_mfa_is_refused_with_a_code(pending, reviewer):
    _token, secret = token_create(user=reviewer, by=reviewer)
    response = review_with_token(secret, pending)
    assert response.status_code == 403
    assert response.json()["code"] == "mfa_required"
    assert not Review.objects.exists()


def test_api_token_made_from_a_verified_session_reviews(pending, reviewer):
    _token, secret = token_create(user=reviewer, mfa_verified_at=timezone.now(), by=reviewer)
    response = review_with_token(secret, pending)
    assert response.status_code == 201, response.json()


def test_api_token_mfa_standing_ends_fifteen_minutes_after_the_verification(pending, reviewer):
    old = timezone.now() - timedelta(minutes=16)
    _token, secret = token_create(user=reviewer, mfa_verified_at=old, by=reviewer)
    response = review_with_token(secret, pending)
    assert response.status_code == 403 and response.json()["code"] == "mfa_required"


def test_api_with_a_verified_session_reviews(client, pending, reviewer):
    totp = enrol(reviewer)
    client.force_login(reviewer)
    url = f"/api/v1/requests/{pending.pk}/reviews/"
    session = client.session
    session.pop("mfa_verified_at", None)
    session.save()
    refused = client.post(url, {"decision": "approve", "reason": "ok"}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["code"] == "mfa_required"
    client.post(VERIFY, {"code": totp.now(), "next": "/"})
    done = client.post(url, {"decision": "approve", "reason": "ok"}, content_type="application/json")
    assert done.status_code == 201


def test_the_roles_api_says_which_roles_need_a_second_factor(api, requester, guarded, prod_ssh):
    body = api(requester).get("/api/v1/roles/").json()
    flags = {role["name"]: role["review_requires_mfa"] for role in body["results"]}
    assert flags == {"prod-root": True, "prod-ssh": False}
