"""API tokens: one service makes and revokes them for the API and the admin, with one audit payload."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from knox.auth import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from accounts.auth import TokenAuthentication as ProjectTokenAuthentication
from accounts.models import ApiToken
from accounts.services import token_create, token_revoke
from accounts.tasks import delete_expired_tokens
from audit.models import AuditEvent
from tests.conftest import audit_sealed_verify, make_user

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/token/"
PAYLOAD = {"user", "name", "expires_at", "can_check_access", "mfa_verified_at"}


def admin_url(view: str, *args) -> str:
    return reverse(f"admin:accounts_apitoken_{view}", args=args)


def test_api_and_admin_make_and_revoke_tokens_with_one_audit_payload(admin_client, requester):
    made = APIClient().post(TOKEN_URL, {"username": "alice", "password": "pw-correct-horse", "name": "laptop"})
    api_token = made.json()["token"]
    admin_client.post(admin_url("add"), {"user": requester.pk, "name": "ci", "valid_for": "7"})
    ci = ApiToken.objects.get(name="ci")
    agent = ApiToken.objects.get(name="laptop")

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    assert client.delete(TOKEN_URL).status_code == 204
    admin_client.post(admin_url("changelist"), {"action": "revoke_selected", "_selected_action": [ci.pk]})

    events = list(AuditEvent.objects.filter(action__in=["token.created", "token.revoked"]).order_by("id"))
    assert [(e.action, e.actor_username, e.target_id) for e in events] == [
        ("token.created", "alice", agent.token_key),
        ("token.created", "admin", ci.token_key),
        ("token.revoked", "alice", agent.token_key),
        ("token.revoked", "admin", ci.token_key),
    ]
    assert all(e.target_type == "apitoken" and set(e.data) == PAYLOAD for e in events)
    assert events[1].data == {
        "user": "alice",
        "name": "ci",
        "expires_at": ci.expiry.isoformat(),
        "can_check_access": False,
        "mfa_verified_at": None,
    }
    assert events[0].data["name"] == "laptop" and events[2].data == events[0].data
    assert not ApiToken.objects.exists()
    assert audit_sealed_verify().ok


def test_token_create_lives_as_long_as_asked_and_the_secret_authenticates(requester, admin_user):
    token, secret = token_create(
        user=requester, name="agent", lifetime=timedelta(days=1), can_check_access=True, by=admin_user
    )

    assert token.can_check_access and token.name == "agent"
    assert timedelta(hours=23) < token.expiry - token.created <= timedelta(days=1)
    assert TokenAuthentication().authenticate_credentials(secret.encode()) == (requester, token)


def test_token_revoke_costs_the_same_for_many_tokens_and_skips_ones_already_gone(requester, admin_user):
    def revoke(n: int) -> tuple[int, int]:
        tokens = [token_create(user=make_user(f"u{n}-{i}"), by=admin_user)[0] for i in range(n)]
        with CaptureQueriesContext(connection) as queries:
            count = token_revoke(tokens=ApiToken.objects.filter(pk__in=[t.pk for t in tokens]), by=admin_user)
        return count, len(queries)

    one, few = revoke(1), revoke(5)

    assert (one[0], few[0]) == (1, 5)
    assert one[1] == few[1]
    gone, _ = token_create(user=requester, by=admin_user)
    assert token_revoke(tokens=[gone], by=admin_user) == 1
    assert token_revoke(tokens=[gone], by=admin_user) == 0
    assert AuditEvent.objects.filter(action="token.revoked", target_id=gone.token_key).count() == 1


def _expire(token: ApiToken) -> None:
    ApiToken.objects.filter(digest=token.digest).update(expiry=timezone.now() - timedelta(seconds=1))


def test_an_api_call_authenticates_in_one_query_without_touching_other_tokens(requester, admin_user):
    _, secret = token_create(user=requester, name="laptop", by=admin_user)
    stale, _ = token_create(user=requester, name="old", by=admin_user)
    _expire(stale)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")

    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/me/").status_code == 200

    token_queries = [q["sql"] for q in queries.captured_queries if "apitoken" in q["sql"].lower()]
    assert len(token_queries) == 1 and token_queries[0].lstrip().upper().startswith("SELECT")
    # The caller's other, expired token is the sweep's to delete, not this request's.
    assert ApiToken.objects.filter(digest=stale.digest).exists()


def test_an_expired_token_is_refused_at_once_before_any_sweep(requester, admin_user):
    token, secret = token_create(user=requester, name="laptop", by=admin_user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert client.get("/api/v1/me/").status_code == 200

    _expire(token)

    assert client.get("/api/v1/me/").status_code == 401
    with pytest.raises(AuthenticationFailed):
        ProjectTokenAuthentication().authenticate_credentials(secret.encode())
    assert ApiToken.objects.filter(digest=token.digest).exists()


def test_the_sweep_deletes_only_expired_tokens_and_audits_each(requester, admin_user):
    live, live_secret = token_create(user=requester, name="live", by=admin_user)
    expired = [token_create(user=make_user(f"gone{i}"), name=f"gone{i}", by=admin_user)[0] for i in range(3)]
    for token in expired:
        _expire(token)

    assert delete_expired_tokens() == 3
    assert delete_expired_tokens() == 0

    assert list(ApiToken.objects.values_list("digest", flat=True)) == [live.digest]
    events = AuditEvent.objects.filter(action="token.expired").order_by("id")
    assert sorted(e.target_id for e in events) == sorted(t.token_key for t in expired)
    assert all(e.actor_username == "" and set(e.data) == PAYLOAD for e in events)
    assert ProjectTokenAuthentication().authenticate_credentials(live_secret.encode()) == (requester, live)
    assert audit_sealed_verify().ok


def test_the_token_sweep_runs_from_beat():
    entry = settings.CELERY_BEAT_SCHEDULE["delete-expired-tokens"]
    assert entry["task"] == delete_expired_tokens.name
    assert entry["options"]["expires"] < entry["schedule"]
