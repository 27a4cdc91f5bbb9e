from __future__ import annotations

import pytest

from accounts import oidc
from tests.oidc.idp import CLIENT_ID, CLIENT_SECRET, start_provider

PORTAL = "http://testserver"


@pytest.fixture(scope="session")
def provider(tmp_path_factory):
    """One real OpenID provider for the module's tests, sending people back to the test client's portal."""
    running = start_provider(tmp_path_factory.mktemp("oidc-provider"), [f"{PORTAL}/auth/oidc/callback/"])
    yield running
    running.stop()


@pytest.fixture
def sso(provider, settings):
    """The portal configured for the provider; each test gets its own client object (fresh discovery and keys)."""
    settings.JITPORTAL_OIDC_ISSUER = provider.issuer
    settings.JITPORTAL_OIDC_CLIENT_ID = CLIENT_ID
    settings.JITPORTAL_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.JITPORTAL_OIDC_SCOPES = "openid profile email groups"
    oidc._clients.clear()
    yield provider
    oidc._clients.clear()
