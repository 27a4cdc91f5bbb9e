"""OIDC sign-in against a real OpenID provider (npm's oidc-provider), over HTTP.

The portal is Django's test client; the provider's pages are walked with
``requests``. Refusals that need a token the provider would never issue
(tampered, wrong audience, expired, replayed) come from a small token
endpoint put in front of the provider's own, which hands on the provider's
answer with the ID token altered; re-signed tokens use a key whose JWKS the
test serves, and one re-signed unaltered shows that path signs in.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.contrib.auth.models import Group
from joserfc import jwt
from joserfc.jwk import RSAKey

from accounts import oidc
from accounts.models import OidcIdentity, User
from audit.models import AuditEvent
from tests.conftest import make_user
from tests.oidc.conftest import PORTAL
from tests.oidc.idp import CLIENT_ID, provider_walk

pytestmark = pytest.mark.django_db


def alice_claims(**overrides) -> dict:
    claims = {
        "preferred_username": "alice",
        "email": "alice@example.com",
        "given_name": "Alice",
        "family_name": "Liddell",
        "groups": ["engineers"],
    }
    return {**claims, **overrides}


def sign_in(client, provider, login: str = "alice", *, next_url: str = ""):
    """The whole flow: the portal's redirect, the provider's pages, the callback; returns the callback's answer."""
    start = client.get("/auth/oidc/login/" + (f"?next={urllib.parse.quote(next_url)}" if next_url else ""))
    assert start.status_code == 302, start.content
    authorize = start["Location"]
    assert authorize.startswith(provider.issuer)
    callback = provider_walk(requests.Session(), authorize, login=login, portal=PORTAL)
    path = callback.removeprefix(PORTAL)
    response = client.get(path)
    response.callback_path = path
    return response


def signed_in_as(client) -> str | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id).username if user_id else None


def failures() -> list[dict]:
    return list(AuditEvent.objects.filter(action="auth.failed").order_by("id").values_list("data", flat=True))


# --- the good path -----------------------------------------------------------------------------


def test_the_authorization_request_uses_pkce_state_and_nonce(client, sso):
    start = client.get("/auth/oidc/login/")

    query = urllib.parse.parse_qs(urllib.parse.urlsplit(start["Location"]).query)
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert query["state"][0] and query["nonce"][0]
    assert query["redirect_uri"] == [f"{PORTAL}/auth/oidc/callback/"]
    assert "openid" in query["scope"][0].split()


def test_a_first_sign_in_creates_the_user_with_names_email_and_known_groups(client, sso):
    engineers = Group.objects.create(name="engineers")
    sso.set_user("alice", **alice_claims(groups=["engineers", "no-such-group"]))

    response = sign_in(client, sso, next_url="/requests/")

    assert response.status_code == 302 and response["Location"] == "/requests/"
    assert signed_in_as(client) == "alice"
    alice = User.objects.get(username="alice")
    assert (alice.email, alice.first_name, alice.last_name) == ("alice@example.com", "Alice", "Liddell")
    assert not alice.has_usable_password()
    # The unknown group is ignored, not created.
    assert list(alice.groups.all()) == [engineers]
    assert not Group.objects.filter(name="no-such-group").exists()
    assert OidcIdentity.objects.get(user=alice).subject == "alice"
    event = AuditEvent.objects.get(action="auth.login")
    assert event.data["method"] == "oidc" and event.data["created"] is True
    assert event.data["groups_added"] == ["engineers"] and event.data["groups_unknown"] == 1
    # The portal page now answers as alice.
    assert client.get("/").status_code == 200


def test_groups_follow_the_provider_added_and_removed_across_two_sign_ins(client, sso):
    for name in ("engineers", "sre-leads", "security"):
        Group.objects.create(name=name)
    sso.set_user("alice", **alice_claims(groups=["engineers", "security"]))
    sign_in(client, sso)
    alice = User.objects.get(username="alice")
    assert sorted(alice.groups.values_list("name", flat=True)) == ["engineers", "security"]
    # A group given by hand in the portal is not the provider's to keep: the next sign-in sets exactly its list.
    alice.groups.add(Group.objects.get(name="sre-leads"))

    sso.set_user("alice", **alice_claims(groups=["security"], email="alice@new.example.com"))
    client.logout()
    sign_in(client, sso)

    alice.refresh_from_db()
    assert sorted(alice.groups.values_list("name", flat=True)) == ["security"]
    assert alice.email == "alice@new.example.com"
    second = AuditEvent.objects.filter(action="auth.login").order_by("-id").first()
    assert second.data["groups_removed"] == ["engineers", "sre-leads"] and second.data["groups_added"] == []
    assert second.data["created"] is False and second.data["updated"] == ["email"]


def test_an_existing_password_user_is_linked_and_keeps_signing_in_through_sso(client, sso):
    make_user("alice", groups=("engineers",))
    sso.set_user("alice", **alice_claims(groups=[]))

    sign_in(client, sso)

    assert signed_in_as(client) == "alice"
    assert User.objects.filter(username="alice").count() == 1
    assert not User.objects.get(username="alice").groups.exists()


def test_a_deactivated_user_is_refused_and_it_is_audited(client, sso):
    make_user("alice", is_active=False)
    sso.set_user("alice", **alice_claims())

    response = sign_in(client, sso)

    assert response.status_code == 400
    assert signed_in_as(client) is None
    assert failures()[-1]["code"] == "user_inactive"


def test_another_subject_claiming_a_bound_username_is_refused(client, sso):
    sso.set_user("alice", **alice_claims())
    sign_in(client, sso)
    client.logout()
    # A different account at the provider now calls itself alice.
    sso.set_user("mallory", **alice_claims(groups=["engineers"]))

    response = sign_in(client, sso, login="mallory")

    assert response.status_code == 400
    assert signed_in_as(client) is None
    assert failures()[-1]["code"] == "oidc_subject_mismatch"
    assert OidcIdentity.objects.get(user__username="alice").subject == "alice"


def test_sso_is_absent_until_configured(client, settings):
    settings.JITPORTAL_OIDC_ISSUER = ""

    assert client.get("/auth/oidc/login/").status_code == 404
    assert b"/auth/oidc/login/" not in client.get("/accounts/login/").content


def test_the_login_page_offers_sso_when_configured(client, sso):
    page = client.get("/accounts/login/?next=/requests/")

    assert b'href="/auth/oidc/login/?next=/requests/"' in page.content
    assert b'name="password"' in page.content


# --- replays ---------------------------------------------------------------------------------


def test_a_replayed_callback_is_refused_and_audited(client, sso):
    sso.set_user("alice", **alice_claims())
    first = sign_in(client, sso)
    assert first.status_code == 302
    client.logout()

    again = client.get(first.callback_path)

    assert again.status_code == 400
    assert signed_in_as(client) is None
    assert "mismatching_state" in failures()[-1]["reason"]


def test_a_callback_in_another_browser_session_is_refused(client, sso):
    sso.set_user("alice", **alice_claims())
    start = client.get("/auth/oidc/login/")
    callback = provider_walk(requests.Session(), start["Location"], login="alice", portal=PORTAL)

    # An attacker's browser holds none of the state the sign-in started with.
    from django.test import Client

    other = Client()
    response = other.get(callback.removeprefix(PORTAL))

    assert response.status_code == 400
    assert "_auth_user_id" not in other.session
    assert not User.objects.filter(username="alice").exists()


def test_an_error_from_the_provider_is_refused_and_audited(client, sso):
    start = client.get("/auth/oidc/login/")
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(start["Location"]).query)["state"][0]

    response = client.get(f"/auth/oidc/callback/?error=access_denied&error_description=nope&state={state}")

    assert response.status_code == 400
    assert failures()[-1]["reason"].startswith("access_denied")


# --- ID tokens the provider never issued ---------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenFront:
    """A token endpoint in front of the provider's: hands on its answer with ``alter(id_token)`` applied."""

    def __init__(self, provider):
        self.provider = provider
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
        self.alter = lambda id_token: id_token
        self.seen: list[str] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                keys = requests.get(f"{front.provider.issuer}/jwks", timeout=5).json()["keys"]
                self._send({"keys": [*keys, front.key.as_dict(private=False)]})

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = requests.post(
                    front.metadata["token_endpoint"],
                    data=body,
                    headers={k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")},
                    timeout=10,
                )
                token = answer.json()
                if "id_token" in token:
                    front.seen.append(token["id_token"])
                    token["id_token"] = front.alter(token["id_token"])
                self._send(token, status=answer.status_code)

            def _send(self, body, status=200):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.metadata = provider.metadata()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def resign(self, id_token: str, **changes) -> str:
        claims = json.loads(_unb64(id_token.split(".")[1]))
        claims.update(changes)
        return jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, self.key)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def front(sso):
    """The portal sends its code to the front and trusts the front's JWKS (the provider's keys and the test's)."""
    front = TokenFront(sso)
    client = oidc.oidc_client()
    client.load_server_metadata()
    client.server_metadata["token_endpoint"] = f"{front.url}/token"
    client.server_metadata["jwks_uri"] = f"{front.url}/jwks"
    client.server_metadata.pop("jwks", None)
    yield front
    front.close()


def test_an_id_token_resigned_unaltered_by_a_trusted_key_signs_in(client, front):
    """The harness itself: re-signing alone changes nothing, so each refusal below is the claim's."""
    front.provider.set_user("alice", **alice_claims())
    front.alter = front.resign

    response = sign_in(client, front.provider)

    assert response.status_code == 302
    assert signed_in_as(client) == "alice"


def test_a_tampered_id_token_is_refused(client, front):
    Group.objects.create(name="admins")
    front.provider.set_user("alice", **alice_claims())

    def tamper(id_token: str) -> str:
        header, payload, signature = id_token.split(".")
        claims = json.loads(_unb64(payload))
        claims["groups"] = ["admins"]
        claims["preferred_username"] = "root"
        return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"

    front.alter = tamper

    response = sign_in(client, front.provider)

    assert response.status_code == 400
    assert signed_in_as(client) is None
    assert not User.objects.exists()
    assert "signature" in failures()[-1]["reason"].lower()


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        # azp left naming this portal, so the audience check alone refuses it.
        ({"aud": "another-client", "azp": CLIENT_ID}, "aud"),
        ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 900}, "expired"),
        ({"iss": "https://evil.example.com"}, "iss"),
        ({"nonce": "not-the-nonce-we-sent"}, "nonce"),
    ],
    ids=["wrong-audience", "expired", "wrong-issuer", "wrong-nonce"],
)
def test_an_id_token_with_a_wrong_claim_is_refused(client, front, changes, why):
    front.provider.set_user("alice", **alice_claims())
    front.alter = lambda id_token: front.resign(id_token, **changes)

    response = sign_in(client, front.provider)

    assert response.status_code == 400
    assert signed_in_as(client) is None
    assert not User.objects.exists()
    assert why in failures()[-1]["reason"].lower()


def test_an_id_token_replayed_into_a_later_sign_in_is_refused_by_its_nonce(client, front):
    front.provider.set_user("alice", **alice_claims())
    assert sign_in(client, front.provider).status_code == 302
    client.logout()
    earlier = front.seen[0]
    front.alter = lambda id_token: earlier

    response = sign_in(client, front.provider)

    assert response.status_code == 400
    assert signed_in_as(client) is None
    assert "nonce" in failures()[-1]["reason"].lower()


def test_a_token_response_without_an_id_token_is_refused(client, front):
    front.provider.set_user("alice", **alice_claims())
    front.alter = lambda id_token: ""

    response = sign_in(client, front.provider)

    assert response.status_code == 400
    assert signed_in_as(client) is None


def test_the_admin_sign_in_offers_sso_and_comes_back_to_the_admin(client, sso):
    page = client.get("/admin/login/?next=/admin/")

    assert b'href="/auth/oidc/login/?next=/admin/"' in page.content


def test_a_person_without_the_username_claim_is_refused_and_nothing_is_created(client, sso):
    sso.set_user("nameless", email="nameless@example.com", groups=["engineers"])

    response = sign_in(client, sso, login="nameless")

    assert response.status_code == 400
    assert signed_in_as(client) is None
    assert not User.objects.exists()
    assert failures()[-1] == {
        **failures()[-1],
        "method": "oidc",
        "code": "oidc_claims_invalid",
        "reason": "the 'preferred_username' claim is missing",
    }


def test_the_username_claim_is_configurable(client, sso, settings):
    settings.JITPORTAL_OIDC_USERNAME_CLAIM = "email"
    sso.set_user("alice", **alice_claims())

    sign_in(client, sso)

    assert signed_in_as(client) == "alice@example.com"


def test_an_unsigned_id_token_is_refused(client, front):
    front.provider.set_user("alice", **alice_claims())

    def unsigned(id_token: str) -> str:
        payload = id_token.split(".")[1]
        return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}."

    front.alter = unsigned

    response = sign_in(client, front.provider)

    assert response.status_code == 400
    assert signed_in_as(client) is None
    assert not User.objects.exists()


def test_a_discovery_document_naming_another_issuer_is_refused(client, sso, settings):
    # The same provider reached by another name: its document names 127.0.0.1, not localhost.
    settings.JITPORTAL_OIDC_ISSUER = sso.issuer.replace("127.0.0.1", "localhost")

    response = client.get("/auth/oidc/login/")

    assert response.status_code == 502
    assert "names issuer" in failures()[-1]["reason"]


def test_an_unreachable_provider_is_a_clear_failure(client, sso, settings):
    settings.JITPORTAL_OIDC_ISSUER = "http://127.0.0.1:9"

    response = client.get("/auth/oidc/login/")

    assert response.status_code == 502
    assert b"Single sign-on failed" in response.content
    assert "discovery document cannot be read" in failures()[-1]["reason"]
