"""Passkeys in a real browser: Chromium's virtual authenticator registers one and reviews with it.

The authenticator is Chromium's own (DevTools ``WebAuthn`` domain: a CTAP2
internal authenticator with resident keys and user verification), so the
ceremonies run as with a real passkey: the page's script, the browser's
WebAuthn implementation, and the portal's checks of origin, RP id,
challenge, signature and sign count. WebAuthn needs a secure context and a
host name as RP id: the live server is reached as ``localhost`` (an IP
address is no valid RP id).
"""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect, sync_playwright

from accounts.models import WebAuthnCredential
from audit.models import AuditEvent
from requests_app.models import Review
from requests_app.services import request_create
from tests.browser.test_e2e import CHROMIUM, CHROMIUM_ARGS, shot
from tests.conftest import make_resource, make_role, make_user

PASSWORD = "passkey-test-pass"


@pytest.fixture
def chromium(monkeypatch):
    if not CHROMIUM.exists():
        message = "/usr/bin/chromium is not installed (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def passkey_site(live_server, settings, transactional_db):
    assert live_server.url.startswith("http://localhost:")
    settings.JITPORTAL_WEBAUTHN_RP_ID = "localhost"
    settings.JITPORTAL_WEBAUTHN_ORIGIN = live_server.url
    requester = make_user("alice", groups=("engineers",), password=PASSWORD)
    reviewer = make_user("bob", groups=("sre-leads",), password=PASSWORD)
    role = make_role("prod-root", review_requires_mfa=True)
    web1 = make_resource("web-1", labels={"env": "prod"})
    pending = request_create(requester=requester, resources=[web1], roles=[role], reason="INC-7 root")
    return live_server.url, reviewer, pending


def with_authenticator(context, page):
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def sign_in(page, url: str, username: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Hello")


def sign_out(page) -> None:
    page.click("button:has-text('Sign out')")


def test_register_a_passkey_then_verify_with_it_to_review(chromium, passkey_site):
    url, reviewer, pending = passkey_site
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    cdp, authenticator = with_authenticator(context, page)
    sign_in(page, url, "bob")

    # Registration: the page's script, the browser's ceremony, the portal's checks.
    page.goto(f"{url}/mfa/")
    page.fill("#passkey-name", "laptop")
    page.click("button:has-text('Add a passkey')")
    expect(page.locator(".messages")).to_contain_text("Passkey 'laptop' added")
    expect(page.locator(".passkey")).to_contain_text("laptop")
    shot(page, "mfa-01-passkey-added")
    stored = WebAuthnCredential.objects.get(user=reviewer)
    held = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(held) == 1 and held[0]["isResidentCredential"] is True
    assert AuditEvent.objects.filter(action="auth.mfa_enrolled", data__method="webauthn").count() == 1

    # A new session has no verification: the review page sends to verify, and back after the passkey.
    sign_out(page)
    sign_in(page, url, "bob")
    page.goto(f"{url}/admin/requests_app/accessrequest/review/?decision=approve&ids={pending.pk}")
    expect(page.locator("h1")).to_have_text("Verify a second factor")
    shot(page, "mfa-02-verify")
    page.click("button:has-text('Use a passkey')")
    expect(page.locator("h1")).to_have_text("Approve 1 access request")
    page.fill("#id_reason", "root for INC-7")
    page.click("input[type=submit].default")
    expect(page.locator(".messagelist")).to_contain_text("Approved")
    shot(page, "mfa-03-reviewed")
    assert Review.objects.get(request=pending).reviewer == reviewer
    # The signature counter moved on from the registration's.
    before = stored.sign_count
    stored.refresh_from_db()
    assert stored.sign_count > before and stored.last_used_at is not None
    assert AuditEvent.objects.filter(action="auth.mfa_verified", data__method="webauthn").count() == 1
    context.close()


def test_a_passkey_whose_counter_went_backwards_is_refused(chromium, passkey_site):
    url, reviewer, _pending = passkey_site
    context = chromium.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    with_authenticator(context, page)
    sign_in(page, url, "bob")
    page.goto(f"{url}/mfa/")
    page.fill("#passkey-name", "key")
    page.click("button:has-text('Add a passkey')")
    expect(page.locator(".passkey")).to_contain_text("key")

    # As if a copy of the key had been used further than this one: its counter is behind.
    WebAuthnCredential.objects.filter(user=reviewer).update(sign_count=10_000)
    sign_out(page)
    sign_in(page, url, "bob")
    page.goto(f"{url}/mfa/verify/?next=/")
    page.click("button:has-text('Use a passkey')")
    expect(page.locator("#passkey-problem")).to_contain_text("not accepted")
    failed = AuditEvent.objects.get(action="auth.mfa_failed")
    assert failed.data["method"] == "webauthn" and "sign count" in failed.data["reason"].lower()
    assert not AuditEvent.objects.filter(action="auth.mfa_verified", data__method="webauthn").exists()
    context.close()
