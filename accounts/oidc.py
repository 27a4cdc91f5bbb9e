"""OpenID Connect sign-in through Authlib: the one place that speaks to the identity provider.

Authlib does the protocol: discovery, the authorization code flow with
PKCE (S256), state and nonce kept in the session and dropped once used, the
code exchange, and the ID token's signature (the provider's JWKS), issuer,
audience, expiry and nonce. What is added here: the discovery document must
name the configured issuer, an ID token is required (a token response
without one is refused rather than trusted), and the userinfo endpoint's
claims count only for the same subject.
"""

from __future__ import annotations

from typing import Any

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.django_client import DjangoOAuth2App, OAuth
from django.conf import settings

from jitportal.errors import DomainError

# Claims that describe the token rather than the person: never taken from userinfo.
_TOKEN_CLAIMS = {"iss", "aud", "exp", "iat", "nbf", "nonce", "azp", "at_hash", "c_hash", "auth_time", "sid"}


class OidcFailed(DomainError):
    """The provider's answer was refused; ``message`` says why (it goes to the audit log)."""

    status_code = 400
    code = "oidc_failed"


def oidc_enabled() -> bool:
    return bool(
        settings.JITPORTAL_OIDC_ISSUER and settings.JITPORTAL_OIDC_CLIENT_ID and settings.JITPORTAL_OIDC_CLIENT_SECRET
    )


_clients: dict[tuple, DjangoOAuth2App] = {}


def oidc_client() -> DjangoOAuth2App:
    """The Authlib client for the configured provider; its discovery document and keys are kept per process."""
    key = (
        settings.JITPORTAL_OIDC_ISSUER,
        settings.JITPORTAL_OIDC_CLIENT_ID,
        settings.JITPORTAL_OIDC_CLIENT_SECRET,
        settings.JITPORTAL_OIDC_SCOPES,
        settings.JITPORTAL_OIDC_TIMEOUT_SECONDS,
    )
    client = _clients.get(key)
    if client is None:
        registry = OAuth()
        client = registry.register(
            name="oidc",
            client_id=settings.JITPORTAL_OIDC_CLIENT_ID,
            client_secret=settings.JITPORTAL_OIDC_CLIENT_SECRET,
            server_metadata_url=f"{settings.JITPORTAL_OIDC_ISSUER}/.well-known/openid-configuration",
            client_kwargs={
                "scope": settings.JITPORTAL_OIDC_SCOPES,
                "code_challenge_method": "S256",
                "timeout": settings.JITPORTAL_OIDC_TIMEOUT_SECONDS,
            },
        )
        _clients[key] = client
    return client


def _metadata(client: DjangoOAuth2App) -> dict:
    try:
        metadata = client.load_server_metadata()
    except Exception as exc:  # requests' and JSON errors alike: the provider is unreachable or unreadable
        raise OidcFailed(f"the provider's discovery document cannot be read: {exc}") from exc
    # OpenID Connect Discovery 1.0, 4.3: the document must name the issuer it was fetched for.
    if metadata.get("issuer") != settings.JITPORTAL_OIDC_ISSUER:
        raise OidcFailed(f"the discovery document names issuer {metadata.get('issuer')!r}")
    return metadata


def oidc_authorize_redirect(request, *, redirect_uri: str):
    """The redirect to the provider; state, nonce and the PKCE verifier stay in the session."""
    client = oidc_client()
    _metadata(client)
    return client.authorize_redirect(request, redirect_uri)


def oidc_callback_claims(request) -> dict[str, Any]:
    """The verified claims of the person the provider sent back, or ``OidcFailed`` saying why."""
    client = oidc_client()
    _metadata(client)
    # Authlib checks the audience only through ``azp`` unless told the values: a token for
    # another client that names this one as its authorized party would otherwise pass.
    claims_options = {
        "iss": {"essential": True, "values": [settings.JITPORTAL_OIDC_ISSUER]},
        "aud": {"essential": True, "values": [settings.JITPORTAL_OIDC_CLIENT_ID]},
    }
    try:
        token = client.authorize_access_token(request, claims_options=claims_options)
    except OAuthError as exc:
        raise OidcFailed(f"{exc.error}: {exc.description}" if exc.description else str(exc.error)) from exc
    except Exception as exc:  # the JOSE layer's errors (signature, claims) and the HTTP layer's
        raise OidcFailed(f"{type(exc).__name__}: {exc}") from exc
    claims = token.get("userinfo")
    if not claims:
        raise OidcFailed("the provider's token response has no ID token")
    claims = dict(claims)
    if client.server_metadata.get("userinfo_endpoint"):
        try:
            extra = client.userinfo(token=token)
        except Exception as exc:
            raise OidcFailed(f"the userinfo endpoint failed: {exc}") from exc
        if extra.get("sub") != claims.get("sub"):
            raise OidcFailed("the userinfo endpoint answered for another subject")
        claims.update({name: value for name, value in extra.items() if name not in _TOKEN_CLAIMS})
    return claims
