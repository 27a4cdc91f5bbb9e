"""API authentication: tokens for a password, stored hashed, expiring, revocable, throttled.

Also: every endpoint but the token endpoint and the schema refuses anonymous
callers, and one whole flow runs on real tokens only.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from knox.crypto import hash_token
from knox.settings import knox_settings
from rest_framework.test import APIClient

from accounts.api.views import TokenThrottle
from accounts.models import ApiToken
from audit.models import AuditEvent
from requests_app import services
from requests_app.models import AccessRequest, Grant
from tests.conftest import make_user

TOKEN_URL = "/api/v1/auth/token/"
PASSWORD = "pw-correct-horse"  # tests.conftest.make_user's default


def obtain(client: APIClient, username: str, password: str = PASSWORD, **extra):
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json", **extra)


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def tables_containing(text: str) -> list[str]:
    """Every table with a row in which some column contains ``text``."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            if any(text in str(value) for row in cursor.fetchall() for value in row):
                found.append(table)
    return found


# --- issuing ------------------------------------------------------------------


def test_password_exchange_returns_token_expiry_and_username(requester):
    before = timezone.now()

    response = obtain(APIClient(), "alice")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"token", "expires_at", "username"}
    assert body["username"] == "alice"
    assert body["token"].startswith(knox_settings.TOKEN_PREFIX)
    expires_at = parse_datetime(body["expires_at"])
    assert before + knox_settings.TOKEN_TTL <= expires_at <= timezone.now() + knox_settings.TOKEN_TTL
    assert AuditEvent.objects.filter(action="token.created", actor_username="alice").count() == 1


def test_issued_token_authenticates_api_calls(requester):
    issued = obtain(APIClient(), "alice").json()

    response = token_client(issued["token"]).get("/api/v1/me/")

    assert response.status_code == 200
    assert response.json() == {
        "username": "alice",
        "email": "alice@example.com",
        "is_staff": False,
        "groups": ["engineers"],
        "capabilities": [],
        # The expiry of the token the call came with, as issued: what `jit login --token` shows.
        "token_expires_at": issued["expires_at"],
    }


def test_me_names_the_capabilities_held(api, auditor, revoker):
    assert api(auditor).get("/api/v1/me/").json()["capabilities"] == ["audit"]
    assert api(revoker).get("/api/v1/me/").json()["capabilities"] == ["revoke"]
    root = make_user("root", is_superuser=True)
    assert api(root).get("/api/v1/me/").json()["capabilities"] == [
        "audit",
        "revoke",
        "check_access",
        "manage_oncall",
        "scim",
    ]


def test_token_is_stored_only_as_a_hash(requester):
    token = obtain(APIClient(), "alice").json()["token"]

    stored = ApiToken.objects.get(user=requester)
    assert stored.digest == hash_token(token)
    assert len(stored.token_key) < len(token)  # a lookup prefix, not the secret
    assert tables_containing(token) == []


def test_token_of_deactivated_user_stops_working(requester):
    token = obtain(APIClient(), "alice").json()["token"]
    requester.is_active = False
    requester.save(update_fields=["is_active"])

    assert token_client(token).get("/api/v1/me/").status_code == 401


# --- refusals -------------------------------------------------------------------


def test_wrong_password_is_refused_with_readable_detail_and_audited(requester):
    response = obtain(APIClient(), "alice", "wrong-password")

    assert response.status_code == 400
    assert response.json() == {"detail": "invalid username or password", "code": "invalid_credentials"}
    assert not ApiToken.objects.exists()
    event = AuditEvent.objects.get(action="token.refused")
    assert event.target_id == "alice"


def test_inactive_user_is_refused_like_a_wrong_password(requester):
    requester.is_active = False
    requester.save(update_fields=["is_active"])

    response = obtain(APIClient(), "alice")

    assert response.status_code == 400
    assert response.json() == {"detail": "invalid username or password", "code": "invalid_credentials"}
    assert not ApiToken.objects.exists()
    assert AuditEvent.objects.filter(action="token.refused", target_id="alice").exists()


def test_unknown_username_gets_the_same_answer_as_a_wrong_password(db):
    response = obtain(APIClient(), "nobody")

    assert response.status_code == 400
    assert response.json() == {"detail": "invalid username or password", "code": "invalid_credentials"}
    assert AuditEvent.objects.filter(action="token.refused", target_id="nobody").exists()


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        ("{}", "application/json"),
        ('{"username": "alice"}', "application/json"),
        ('{"password": "pw-correct-horse"}', "application/json"),
        ('{"username": null, "password": "pw-correct-horse"}', "application/json"),
        ('{"username": ["alice"], "password": "pw-correct-horse"}', "application/json"),
        ('{"username": {"u": "alice"}, "password": "pw-correct-horse"}', "application/json"),
        ('{"username": "alice", "password": "pw-correct-horse", "name": {"n": 1}}', "application/json"),
        (json.dumps({"username": "a" * 151, "password": "x"}), "application/json"),
        ('["alice", "pw-correct-horse"]', "application/json"),
        ('"alice"', "application/json"),
        ("42", "application/json"),
        ("null", "application/json"),
        ("username=alice&password=", "application/json"),  # not JSON at all
        ('{"username": "alice",', "application/json"),  # truncated JSON
    ],
)
def test_malformed_token_requests_are_400(requester, raw, content_type):
    response = APIClient().post(TOKEN_URL, data=raw, content_type=content_type)

    assert response.status_code == 400, response.content
    assert response.json()  # a readable body, field errors or detail
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("header", ["Token", "Token a b", "Token jit_notarealtoken", "Token " + "0" * 64])
def test_garbage_token_header_is_401(requester, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    assert client.get("/api/v1/me/").status_code == 401


# --- expiry and revocation ------------------------------------------------------


def test_expired_token_is_rejected(requester):
    token = obtain(APIClient(), "alice").json()["token"]
    ApiToken.objects.filter(user=requester).update(expiry=timezone.now() - timedelta(seconds=1))

    response = token_client(token).get("/api/v1/me/")

    assert response.status_code == 401


def test_deleted_token_is_rejected(requester):
    token = obtain(APIClient(), "alice").json()["token"]
    ApiToken.objects.filter(user=requester).delete()

    assert token_client(token).get("/api/v1/me/").status_code == 401


def test_delete_revokes_only_the_presented_token(requester):
    first = obtain(APIClient(), "alice").json()["token"]
    second = obtain(APIClient(), "alice").json()["token"]

    response = token_client(first).delete(TOKEN_URL)

    assert response.status_code == 204
    assert token_client(first).get("/api/v1/me/").status_code == 401
    assert token_client(second).get("/api/v1/me/").status_code == 200
    assert ApiToken.objects.filter(user=requester).count() == 1
    assert AuditEvent.objects.filter(action="token.revoked", actor_username="alice").count() == 1


def test_delete_without_a_token_is_400_and_revokes_nothing(requester):
    obtain(APIClient(), "alice")

    response = APIClient().delete(TOKEN_URL)

    assert response.status_code == 400
    assert "detail" in response.json()
    assert ApiToken.objects.count() == 1


def test_delete_with_an_expired_token_is_401(requester):
    token = obtain(APIClient(), "alice").json()["token"]
    ApiToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))

    assert token_client(token).delete(TOKEN_URL).status_code == 401


# --- throttle -------------------------------------------------------------------


def test_token_endpoint_throttles_beyond_its_rate_with_retry_after(requester):
    throttle = TokenThrottle()
    allowed, period = throttle.parse_rate(throttle.get_rate())
    assert allowed >= 10, "scripts need at least 10 a minute"
    client = APIClient()

    # Failures and successes share the budget (fewer failures than lock the account).
    failures = [obtain(client, "alice", "wrong").status_code for _ in range(4)]
    successes = [obtain(client, "alice").status_code for _ in range(allowed - 4)]
    throttled = obtain(client, "alice")

    assert failures == [400] * 4
    assert successes == [201] * (allowed - 4)
    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= period
    assert ApiToken.objects.count() == allowed - 4  # the throttled attempt was not processed


def test_token_throttle_is_per_client_address(requester):
    allowed, _ = TokenThrottle().parse_rate(TokenThrottle().get_rate())
    client = APIClient()
    for _ in range(allowed):
        obtain(client, "alice", REMOTE_ADDR="192.0.2.1")

    assert obtain(client, "alice", REMOTE_ADDR="192.0.2.1").status_code == 429
    assert obtain(client, "alice", REMOTE_ADDR="192.0.2.2").status_code == 201


def test_forged_forwarded_for_buys_no_password_guesses(requester):
    client = APIClient()

    answers = [
        obtain(client, "alice", f"guess-{i}", HTTP_X_FORWARDED_FOR=f"203.0.113.{i % 250}, 10.{i}.0.1").status_code
        for i in range(200)
    ]
    right = obtain(client, "alice", HTTP_X_FORWARDED_FOR="198.51.100.1")

    assert set(answers[:4]) == {400}
    assert set(answers[20:]) == {429}, "refused long before the 200th guess"
    assert right.status_code == 429
    assert not ApiToken.objects.exists()


def test_forged_forwarded_for_gets_no_fresh_throttle_budget(requester):
    allowed, _ = TokenThrottle().parse_rate(TokenThrottle().get_rate())
    client = APIClient()

    answers = [obtain(client, "alice", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code for i in range(allowed)]
    forged = obtain(client, "alice", HTTP_X_FORWARDED_FOR="198.51.100.99")

    assert answers == [201] * allowed
    assert forged.status_code == 429


def test_behind_one_trusted_proxy_the_rightmost_forwarded_address_is_the_client(requester, settings):
    settings.JITPORTAL_TRUSTED_PROXIES = 1
    allowed, _ = TokenThrottle().parse_rate(TokenThrottle().get_rate())
    client = APIClient()

    # Each caller forges a different left part; the proxy appends what it saw.
    answers = [
        obtain(client, "alice", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}, 198.51.100.7").status_code for i in range(allowed)
    ]

    assert answers == [201] * allowed
    assert obtain(client, "alice", HTTP_X_FORWARDED_FOR="203.0.113.250, 198.51.100.7").status_code == 429
    assert obtain(client, "alice", HTTP_X_FORWARDED_FOR="198.51.100.7, 198.51.100.8").status_code == 201


# --- anonymous callers ----------------------------------------------------------

PROTECTED = [
    ("get", "/api/v1/me/"),
    ("get", "/api/v1/resources/"),
    ("get", "/api/v1/resources/{resource}/"),
    ("get", "/api/v1/roles/"),
    ("get", "/api/v1/roles/prod-ssh/"),
    ("get", "/api/v1/requests/"),
    ("post", "/api/v1/requests/"),
    ("get", "/api/v1/requests/{request}/"),
    ("post", "/api/v1/requests/{request}/reviews/"),
    ("post", "/api/v1/requests/{request}/cancel/"),
    ("get", "/api/v1/grants/"),
    ("get", "/api/v1/grants/{grant}/"),
    ("post", "/api/v1/grants/{grant}/revoke/"),
    ("get", "/api/v1/access-check/?resource=node/web-1&user=alice"),
    ("get", "/api/v1/audit/"),
    ("get", "/api/v1/audit/{event}/"),
]


@pytest.mark.parametrize(("method", "url"), PROTECTED)
def test_every_endpoint_refuses_anonymous_callers(requester, reviewer, reviewer2, prod_ssh, web1, method, url):
    approved = services.request_create(requester=requester, resources=[web1], reason="INC-1")
    services.request_review(request=approved, reviewer=reviewer, decision="approve")
    services.request_review(request=approved, reviewer=reviewer2, decision="approve")
    pending = services.request_create(requester=requester, resources=[web1], reason="INC-2")
    grant = Grant.objects.get(request=approved)
    url = url.format(resource=web1.pk, request=pending.pk, grant=grant.pk, event=AuditEvent.objects.first().pk)
    body = {"resources": ["node/web-1"], "reason": "x", "decision": "approve"}
    requests_before = AccessRequest.objects.count()

    response = getattr(APIClient(), method)(url, body, format="json") if method == "post" else APIClient().get(url)

    assert response.status_code in (401, 403), response.content
    assert "detail" in response.json()
    pending.refresh_from_db()
    grant.refresh_from_db()
    assert pending.state == AccessRequest.State.PENDING
    assert not pending.reviews.exists()
    assert grant.revoked_at is None
    assert AccessRequest.objects.count() == requests_before


@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_are_open_to_anonymous_callers(db, url):
    assert APIClient().get(url).status_code == 200


# --- one flow on real tokens ------------------------------------------------------


def test_whole_flow_runs_on_tokens_from_the_token_endpoint(requester, reviewer, reviewer2, prod_ssh, web1, web2, dev1):
    tokens = {name: obtain(APIClient(), name).json()["token"] for name in ("alice", "bob", "carol")}
    alice, bob, carol = (token_client(tokens[name]) for name in ("alice", "bob", "carol"))

    found = alice.get("/api/v1/resources/?label=env=prod").json()
    assert [r["name"] for r in found["results"]] == ["web-1", "web-2"]

    created = alice.post(
        "/api/v1/requests/", {"resources": ["node/web-1"], "reason": "INC-7", "duration": "30m"}, format="json"
    )
    assert created.status_code == 201, created.content
    request_id = created.json()["id"]
    assert [r["id"] for r in bob.get("/api/v1/requests/?scope=review").json()["results"]] == [request_id]

    first = bob.post(f"/api/v1/requests/{request_id}/reviews/", {"decision": "approve", "reason": "ok"}, format="json")
    second = carol.post(
        f"/api/v1/requests/{request_id}/reviews/", {"decision": "approve", "reason": "ok"}, format="json"
    )
    assert (first.json()["request_state"], second.json()["request_state"]) == ("pending", "approved")

    check = alice.get("/api/v1/access-check/?resource=node/web-1&login=ubuntu").json()
    assert check["allowed"] is True
    assert alice.get("/api/v1/access-check/?resource=node/web-2&login=ubuntu").json()["allowed"] is False
    grants = alice.get("/api/v1/grants/?active=true").json()["results"]
    assert [(g["resource"]["ref"], g["state"]) for g in grants] == [("node/web-1", "active")]
    assert grants[0]["id"] == check["grant"]

    assert alice.delete(TOKEN_URL).status_code == 204
    assert alice.get("/api/v1/grants/").status_code == 401
    assert bob.get("/api/v1/requests/").status_code == 200


def test_auditor_token_reads_everything_but_normal_token_only_its_own(requester, auditor, prod_ssh, web1):
    make_user("dave", groups=("engineers",))
    services.request_create(requester=requester, resources=[web1], reason="INC-1")
    auditor_token = obtain(APIClient(), "erin").json()["token"]
    dave_token = obtain(APIClient(), "dave").json()["token"]

    assert token_client(auditor_token).get("/api/v1/requests/").json()["count"] == 1
    assert token_client(auditor_token).get("/api/v1/audit/").status_code == 200
    assert token_client(dave_token).get("/api/v1/requests/").json()["count"] == 0
    assert token_client(dave_token).get("/api/v1/audit/").status_code == 403
