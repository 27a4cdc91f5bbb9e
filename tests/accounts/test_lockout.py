"""Password lockout on every password path: the sign-in form, the admin sign-in, the token endpoint.

5 failures in 15 minutes for a username, or from a client address, refuse
that username / address for 15 minutes; failures and lockouts are audited.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import authenticate
from django.db.models import F
from django.test import Client, RequestFactory

from accounts.models import ApiToken
from audit.models import AuditEvent
from tests.conftest import make_user

PASSWORD = "pw-correct-horse"  # tests.conftest.make_user's default
LOCKOUT_MESSAGE = "Too many failed sign-in attempts. Try again in 15 minutes."
PATHS = ["/accounts/login/", "/admin/login/", "/api/v1/auth/token/"]


def attempt(path: str, username: str, password: str, *, address: str = "192.0.2.1", forwarded: str | None = None):
    """One sign-in attempt on ``path``; returns ``"ok"``, ``"wrong"`` or ``"locked"`` (checked in full)."""
    extra = {"REMOTE_ADDR": address}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    client = Client()
    if path.startswith("/api/"):
        response = client.post(
            path, json.dumps({"username": username, "password": password}), content_type="application/json", **extra
        )
        if response.status_code == 201:
            return "ok"
        if response.status_code == 400:
            assert response.json() == {"detail": "invalid username or password", "code": "invalid_credentials"}
            return "wrong"
        assert response.status_code == 429, response.content
        assert response.json() == {"detail": LOCKOUT_MESSAGE, "code": "locked_out"}
        assert response["Retry-After"] == "900"
        return "locked"
    response = client.post(path, {"username": username, "password": password}, **extra)
    if response.status_code == 302:
        assert "_auth_user_id" in client.session
        return "ok"
    assert "_auth_user_id" not in client.session
    if response.status_code == 200:
        assert LOCKOUT_MESSAGE not in response.content.decode()
        return "wrong"
    assert response.status_code == 429, response.content
    page = response.content.decode()
    assert LOCKOUT_MESSAGE in page
    assert 'name="password"' in page  # the form again, with the reason above it
    assert response["Retry-After"] == "900"
    return "locked"


@pytest.fixture
def people(db):
    """Staff, so that a right password signs in on the admin as well as the portal."""
    return [make_user(name, is_staff=True) for name in ("alice", "bob", "carol")]


def move_clock(minutes: float) -> None:
    """Let ``minutes`` pass for the lockout: every recorded failure becomes that much older."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=minutes))


@pytest.mark.parametrize("path", PATHS)
def test_right_password_works_before_any_failure(people, path):
    assert attempt(path, "alice", PASSWORD) == "ok"


@pytest.mark.parametrize("path", PATHS)
def test_five_failures_lock_the_username_even_with_the_right_password(people, path):
    answers = [attempt(path, "alice", f"guess-{i}") for i in range(5)]

    assert answers == ["wrong"] * 4 + ["locked"]
    assert attempt(path, "alice", PASSWORD) == "locked"
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("path", PATHS)
def test_four_failures_do_not_lock(people, path):
    for i in range(4):
        attempt(path, "alice", f"guess-{i}")

    assert attempt(path, "alice", PASSWORD) == "ok"


@pytest.mark.parametrize("path", PATHS)
def test_lockout_is_per_client_for_every_username(people, path):
    # One failure each for five names from one address: no name reaches five.
    for name in ("alice", "carol", "dave", "erin", "frank"):
        attempt(path, name, "guess", address="192.0.2.1")

    assert attempt(path, "bob", PASSWORD, address="192.0.2.1") == "locked"
    assert attempt(path, "bob", PASSWORD, address="192.0.2.2") == "ok"


@pytest.mark.parametrize("path", PATHS)
def test_lockout_is_per_username_from_every_client(people, path):
    # One failure each from five addresses: no address reaches five.
    for i in range(5):
        attempt(path, "alice", "guess", address=f"192.0.2.{10 + i}")

    assert attempt(path, "alice", PASSWORD, address="198.51.100.1") == "locked"
    assert attempt(path, "bob", PASSWORD, address="198.51.100.1") == "ok"


@pytest.mark.parametrize("path", PATHS)
def test_lockout_ends_fifteen_minutes_after_the_locking_failure(people, path):
    for i in range(5):
        attempt(path, "alice", f"guess-{i}")

    move_clock(14)
    assert attempt(path, "alice", PASSWORD) == "locked"  # refused attempts do not prolong it
    move_clock(1)
    assert attempt(path, "alice", PASSWORD) == "ok"


def test_one_path_counts_for_the_others(people):
    for path in ("/accounts/login/", "/admin/login/", "/api/v1/auth/token/", "/accounts/login/"):
        attempt(path, "alice", "guess")

    assert attempt("/admin/login/", "alice", "guess") == "locked"
    assert attempt("/api/v1/auth/token/", "alice", PASSWORD) == "locked"
    assert attempt("/accounts/login/", "alice", PASSWORD) == "locked"


def test_forged_forwarded_for_does_not_escape_the_client_lockout(people):
    for i, name in enumerate(("alice", "carol", "dave", "erin", "frank")):
        attempt("/accounts/login/", name, "guess", forwarded=f"203.0.113.{i}")

    assert attempt("/accounts/login/", "bob", PASSWORD, forwarded="198.51.100.1") == "locked"
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"192.0.2.1"}


def test_behind_a_trusted_proxy_the_lockout_counts_the_forwarded_client(people, settings):
    settings.JITPORTAL_TRUSTED_PROXIES = 1
    for name in ("alice", "carol", "dave", "erin", "frank"):
        attempt("/accounts/login/", name, "guess", address="10.0.0.2", forwarded="203.0.113.9, 198.51.100.7")

    # Same proxy, same forged left part: the client the proxy saw decides.
    assert attempt("/accounts/login/", "bob", PASSWORD, address="10.0.0.2", forwarded="203.0.113.9, 198.51.100.7") == (
        "locked"
    )
    assert attempt("/accounts/login/", "bob", PASSWORD, address="10.0.0.2", forwarded="203.0.113.9, 192.0.2.7") == "ok"
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.7"}


@pytest.mark.parametrize("path", PATHS)
def test_failures_and_lockouts_are_audited_without_the_password(people, path):
    for i in range(5):
        attempt(path, "alice", f"secret-guess-{i}")
    attempt(path, "alice", PASSWORD)

    failed = AuditEvent.objects.filter(action="auth.failed").order_by("id")
    locked = AuditEvent.objects.filter(action="auth.locked").order_by("id")
    assert failed.count() == 6  # five wrong passwords and the refused right one
    assert locked.count() == 2  # the fifth failure locked; the sixth attempt was refused while locked
    for event in [*failed, *locked]:
        assert event.actor is None
        assert event.target_type == "user"
        assert event.target_id == "alice"
        assert event.data["username"] == "alice"
        assert event.data["client"] == "192.0.2.1"
        assert event.data["path"] == path
    assert locked[0].data["failure_limit"] == 5
    assert locked[0].data["locked_for_seconds"] == 900
    everything = json.dumps(list(AuditEvent.objects.values("data", "target_id")))
    assert "secret-guess" not in everything
    assert PASSWORD not in everything


def test_unknown_username_is_counted_and_audited_like_a_known_one(people):
    for _ in range(5):
        attempt("/accounts/login/", "nobody", "guess", address="192.0.2.50")

    assert attempt("/accounts/login/", "nobody", "guess", address="192.0.2.51") == "locked"
    assert AuditEvent.objects.filter(action="auth.failed", target_id="nobody").count() == 6


def test_a_password_check_without_a_request_is_refused_loudly(people):
    # Lockout needs the client; a path that forgot to pass the request must
    # not slip past it (tests sign in with force_login or pass a request).
    with pytest.raises(ValueError, match="requires a request"):
        authenticate(username="alice", password=PASSWORD)
    request = RequestFactory().post("/accounts/login/", REMOTE_ADDR="192.0.2.1")
    assert authenticate(request, username="alice", password=PASSWORD) == people[0]


def test_failure_records_are_read_only_and_for_superusers_only(people):
    attempt("/accounts/login/", "alice", "guess")
    record = AccessAttempt.objects.get()
    staff, root = Client(), Client()
    staff.force_login(people[1])
    root.force_login(make_user("root", is_staff=True, is_superuser=True))
    changelist = "/admin/axes/accessattempt/"
    detail = f"/admin/axes/accessattempt/{record.pk}/change/"

    assert staff.get(changelist).status_code == 403
    assert staff.get(detail).status_code == 403
    assert root.get(changelist).status_code == 200
    page = root.get(detail)
    assert page.status_code == 200
    assert 'type="submit"' not in page.content.decode().split('id="content-main"')[1]
    assert root.post(f"/admin/axes/accessattempt/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    assert root.get("/admin/axes/accessattempt/add/").status_code == 403
    assert AccessAttempt.objects.filter(pk=record.pk).exists()
