"""The API tokens page: create (shown once), list one's own, revoke; through the audited services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import token_create
from audit.models import AuditEvent
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(client):
    user = make_user("alice", groups=("engineers",))
    client.force_login(user)
    return user


def secret_on(page) -> str:
    text = page.content.decode()
    start = text.index('id="new-token-secret">') + len('id="new-token-secret">')
    return text[start : text.index("<", start)]


def test_signed_out_visitors_are_sent_to_sign_in(client):
    assert client.get("/accounts/tokens/")["Location"].startswith("/accounts/login/")


def test_a_created_token_is_shown_once_and_works_on_the_api(client, alice):
    before = timezone.now()

    page = client.post("/accounts/tokens/", {"name": "laptop", "lifetime": "7d"})

    assert page.status_code == 200
    assert page["Cache-Control"] == "no-store"
    secret = secret_on(page)
    token = ApiToken.objects.get(user=alice)
    assert token.name == "laptop"
    assert before + timedelta(days=7) <= token.expiry <= timezone.now() + timedelta(days=7)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert api.get("/api/v1/me/").json()["username"] == "alice"
    event = AuditEvent.objects.get(action="token.created")
    assert event.actor_username == "alice" and event.data["name"] == "laptop"
    # Never again: the list shows the name and the first characters only.
    again = client.get("/accounts/tokens/")
    assert secret not in again.content.decode()
    assert b"laptop" in again.content and token.token_key.encode() in again.content


@pytest.mark.parametrize(
    ("data", "field"),
    [({"name": "x", "lifetime": "10y"}, "lifetime"), ({"name": "  ", "lifetime": "1h"}, "name")],
)
def test_bad_input_names_the_field_and_creates_nothing(client, alice, data, field):
    page = client.post("/accounts/tokens/", data)

    assert page.status_code == 200
    assert field in page.context["form"].errors
    assert not ApiToken.objects.exists()
    assert not AuditEvent.objects.filter(action="token.created").exists()


def test_the_list_shows_only_ones_own_tokens_in_constant_queries(client, alice):
    bob = make_user("bob")
    token_create(user=bob, name="bobs-token", by=bob)
    token_create(user=alice, name="first", by=alice)
    with CaptureQueriesContext(connection) as one:
        client.get("/accounts/tokens/")
    for n in range(5):
        token_create(user=alice, name=f"more-{n}", by=alice)

    with CaptureQueriesContext(connection) as six:
        page = client.get("/accounts/tokens/")

    assert len(six) == len(one)
    assert b"more-4" in page.content and b"first" in page.content
    assert b"bobs-token" not in page.content


def test_revoking_ones_token_ends_it_and_is_audited(client, alice):
    token, secret = token_create(user=alice, name="old", by=alice)

    response = client.post(f"/accounts/tokens/{token.token_key}/revoke/")

    assert response.status_code == 302
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert api.get("/api/v1/me/").status_code == 401
    assert AuditEvent.objects.get(action="token.revoked").actor_username == "alice"


def test_nobody_revokes_another_persons_token(client, alice):
    bob = make_user("bob")
    token, _secret = token_create(user=bob, name="bobs", by=bob)

    response = client.post(f"/accounts/tokens/{token.token_key}/revoke/")

    assert response.status_code == 404
    assert ApiToken.objects.filter(pk=token.pk).exists()
    assert not AuditEvent.objects.filter(action="token.revoked").exists()


def test_revoking_takes_a_post(client, alice):
    token, _secret = token_create(user=alice, name="t", by=alice)

    assert client.get(f"/accounts/tokens/{token.token_key}/revoke/").status_code == 405
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_the_nav_links_the_page(client, alice):
    assert b'href="/accounts/tokens/"' in client.get("/").content


def test_a_token_made_from_a_verified_session_carries_the_verification(client, alice):
    verified = timezone.now() - timedelta(minutes=3)
    session = client.session
    session["mfa_verified_at"] = verified.isoformat()
    session["mfa_user"] = alice.pk
    session.save()

    client.post("/accounts/tokens/", {"name": "reviews", "lifetime": "1h"})
    client.logout()
    client.force_login(alice)  # a new session, verified by nothing
    client.post("/accounts/tokens/", {"name": "plain", "lifetime": "1h"})

    carried = dict(ApiToken.objects.filter(user=alice).values_list("name", "mfa_verified_at"))
    assert carried == {"reviews": verified, "plain": None}
