"""Single sign-on in a real browser: the portal's SSO button, a real OpenID provider's pages, and back.

Chromium (Debian's, through Playwright) and npm's oidc-provider, both real;
skipped on a laptop without them, a failure under CI=true.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from accounts import oidc
from accounts.models import ApiToken, User
from audit.models import AuditEvent
from tests.browser.test_e2e import browser, shot  # noqa: F401 - the browser fixture
from tests.oidc.idp import CLIENT_ID, CLIENT_SECRET, start_provider


@pytest.fixture
def provider(live_server, tmp_path, settings):
    running = start_provider(tmp_path / "provider", [f"{live_server.url}/auth/oidc/callback/"])
    settings.JITPORTAL_OIDC_ISSUER = running.issuer
    settings.JITPORTAL_OIDC_CLIENT_ID = CLIENT_ID
    settings.JITPORTAL_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.JITPORTAL_OIDC_BUTTON_LABEL = "Sign in with Example SSO"
    oidc._clients.clear()
    yield running
    oidc._clients.clear()
    running.stop()


def test_signing_in_through_the_provider_in_a_browser(live_server, browser, provider, transactional_db):  # noqa: F811
    Group.objects.create(name="engineers")
    provider.set_user(
        "alice",
        preferred_username="alice",
        email="alice@example.com",
        given_name="Alice",
        family_name="Liddell",
        groups=["engineers", "not-in-the-portal"],
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()

    page.goto(f"{live_server.url}/requests/")
    shot(page, "sso-0-portal-sign-in")
    page.get_by_role("link", name="Sign in with Example SSO").click()
    # The provider's own login page.
    page.wait_for_url(f"{provider.issuer}/**")
    shot(page, "sso-1-provider-login")
    page.fill("input[name=login]", "alice")
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    # Its consent page, then back to the page first asked for.
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{live_server.url}/requests/")
    shot(page, "sso-2-signed-in")

    expect(page.locator(".who")).to_have_text("alice")
    alice = User.objects.get(username="alice")
    assert list(alice.groups.values_list("name", flat=True)) == ["engineers"]
    assert AuditEvent.objects.get(action="auth.login").data["method"] == "oidc"

    # With no password to give `jit login`, alice makes a token on the API tokens page.
    page.get_by_role("link", name="API tokens").click()
    page.fill("#id_name", "laptop")
    page.select_option("#id_lifetime", "7d")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token-secret").inner_text()
    shot(page, "sso-3-token-created")
    assert secret.startswith("jit_")
    assert ApiToken.objects.get(user=alice).name == "laptop"
    page.goto(f"{live_server.url}/accounts/tokens/")
    expect(page.locator("#new-token-secret")).to_have_count(0)
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator(".messages")).to_contain_text("revoked")
    assert not ApiToken.objects.filter(user=alice).exists()
    context.close()
