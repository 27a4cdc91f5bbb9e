"""JITPORTAL_PASSWORD_LOGIN=0: no password sign-in on the portal, the admin or the token endpoint.

Only a superuser named in JITPORTAL_BREAK_GLASS_LOGIN still gets in, and
each such sign-in is audited as break-glass.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.models import ApiToken
from audit.models import AuditEvent
from tests.conftest import make_user

pytestmark = pytest.mark.django_db
PASSWORD = "pw-correct-horse"  # tests.conftest.make_user's default
PATHS = ["/accounts/login/", "/admin/login/", "/api/v1/auth/token/"]


def attempt(path: str, username: str) -> tuple[bool, Client, object]:
    """One sign-in with the right password; whether it got in."""
    client = Client()
    if path.startswith("/api/"):
        response = client.post(
            path, json.dumps({"username": username, "password": PASSWORD}), content_type="application/json"
        )
        return response.status_code == 201, client, response
    response = client.post(path, {"username": username, "password": PASSWORD})
    return "_auth_user_id" in client.session, client, response


@pytest.fixture
def passwords_off(settings):
    settings.JITPORTAL_PASSWORD_LOGIN = False
    settings.JITPORTAL_BREAK_GLASS_LOGIN = ["root", "alice"]
    return settings


@pytest.mark.parametrize("path", PATHS)
def test_a_password_signs_in_while_password_login_is_on(path):
    make_user("alice", is_staff=True)

    signed_in, _client, _response = attempt(path, "alice")

    assert signed_in
    login = AuditEvent.objects.get(action="auth.login")
    assert login.data["method"] == "password" and login.data["break_glass"] is False


@pytest.mark.parametrize("path", PATHS)
def test_the_right_password_is_refused_while_password_login_is_off(passwords_off, path):
    make_user("bob", is_staff=True, is_superuser=True)

    signed_in, _client, response = attempt(path, "bob")

    assert not signed_in
    assert not ApiToken.objects.exists()
    assert not AuditEvent.objects.filter(action="auth.login").exists()
    if path.startswith("/api/"):
        assert response.status_code == 403
        assert response.json()["code"] == "password_login_disabled"


@pytest.mark.parametrize("path", PATHS)
def test_a_break_glass_superuser_still_signs_in_and_it_is_audited(passwords_off, path):
    make_user("root", is_staff=True, is_superuser=True)

    signed_in, _client, _response = attempt(path, "root")

    assert signed_in
    login = AuditEvent.objects.get(action="auth.login")
    assert login.actor_username == "root"
    assert login.data["method"] == "password" and login.data["break_glass"] is True


@pytest.mark.parametrize("path", PATHS)
def test_naming_an_ordinary_account_as_break_glass_gives_it_nothing(passwords_off, path):
    make_user("alice", is_staff=True)

    signed_in, _client, _response = attempt(path, "alice")

    assert not signed_in
    assert not ApiToken.objects.exists()


def test_the_login_page_hides_the_password_form_when_it_is_off(passwords_off, client):
    page = client.get("/accounts/login/")

    assert b'name="password"' not in page.content
    assert b"Password sign-in is turned off" in page.content
    # The break-glass form stays one address away.
    assert b'name="password"' in client.get("/accounts/login/?local=1").content


def test_the_login_page_shows_the_password_form_by_default(client):
    page = client.get("/accounts/login/")

    assert b'name="password"' in page.content
    assert b"/auth/oidc/login/" not in page.content


def test_password_sessions_end_when_password_login_is_turned_off(settings):
    make_user("bob")
    make_user("root", is_superuser=True, is_staff=True)
    _ok, bob, _response = attempt("/accounts/login/", "bob")
    _ok, root, _response = attempt("/accounts/login/", "root")
    assert bob.get("/").status_code == 200

    settings.JITPORTAL_PASSWORD_LOGIN = False
    settings.JITPORTAL_BREAK_GLASS_LOGIN = ["root"]

    assert bob.get("/")["Location"].startswith("/accounts/login/")
    assert root.get("/").status_code == 200
