"""SSH credentials over the API: certificates for a grant's owner, trust material for hosts.

Every endpoint is also tried without permission.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from accounts.models import ApiToken
from audit.models import AuditEvent
from inventory.services import resource_upsert
from requests_app import services
from requests_app.credentials.ca import ssh_ca_init, ssh_ca_rotate
from requests_app.models import Grant, IssuedCertificate, SSHCertificateAuthority
from tests.conftest import give_capabilities, make_role, make_user
from tests.ssh.keys import ed25519_key, openssh_public, parse_certificate, rsa_key

CA = "/api/v1/ca/ssh/"
REVOKED = "/api/v1/ssh/revoked-keys/"


def certificate_url(grant: Grant) -> str:
    return f"/api/v1/grants/{grant.pk}/certificate/"


def principals_url(ref) -> str:
    return f"/api/v1/resources/{ref}/ssh-principals/"


@pytest.fixture
def web_ssh(db):
    return make_role("web-ssh", approvals=1, logins=["ubuntu", "deploy"])


@pytest.fixture
def grant(requester, reviewer, web_ssh, web1) -> Grant:
    made = services.request_create(requester=requester, resources=[web1], reason="INC-1")
    services.request_review(request=made, reviewer=reviewer, decision="approve")
    return made.grants.get()


def token_client(user, *, can_check_access: bool = False) -> APIClient:
    _, token = ApiToken.objects.create(user=user, can_check_access=can_check_access)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def host_agent(db) -> APIClient:
    """A host's token: a service user holding ``check_access``, its token made with "can check access"."""
    return token_client(give_capabilities(make_user("web-1-agent"), "check_access"), can_check_access=True)


# --- POST /grants/{id}/certificate/ -----------------------------------------------------------


def test_owner_gets_a_certificate_that_ends_with_the_grant(api, requester, grant):
    key = ed25519_key()

    response = api(requester).post(certificate_url(grant), {"public_key": openssh_public(key) + " alice@laptop"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"certificate", "principals", "valid_after", "valid_before", "serial", "key_id"}
    cert = parse_certificate(body["certificate"])
    cert.verify_cert_signature()
    assert body["principals"] == ["deploy@web-1", "ubuntu@web-1"]
    assert [p.decode() for p in cert.valid_principals] == body["principals"]
    assert body["serial"] == cert.serial == IssuedCertificate.objects.get().serial
    assert parse_datetime(body["valid_before"]) <= grant.expires_at
    assert math.floor(parse_datetime(body["valid_before"]).timestamp()) == cert.valid_before
    assert parse_datetime(body["valid_after"]).timestamp() == cert.valid_after
    assert body["key_id"] == cert.key_id.decode()
    assert AuditEvent.objects.filter(action="certificate.issued", actor_username="alice").count() == 1


def test_a_token_works_the_same_as_a_session(requester, grant):
    response = token_client(requester).post(
        certificate_url(grant), {"public_key": openssh_public(ed25519_key())}, format="json"
    )

    assert response.status_code == 201, response.content


def test_a_certificate_over_the_api_costs_the_token_one_read_and_one_write(requester, grant):
    """The token; the grant with its eligibility and signing CA; the certificate with its audit event.

    On PostgreSQL the write is one statement (the grant locked, both rows inserted), and it confirms the
    grant's row as the previous certificate read it, so that read is not repeated; SQLite reads each time and
    inserts the audit event on its own.
    """
    client = token_client(requester)
    body = {"public_key": openssh_public(ed25519_key())}
    assert client.post(certificate_url(grant), body, format="json").status_code == 201

    with CaptureQueriesContext(connection) as captured:
        response = client.post(certificate_url(grant), body, format="json")

    assert response.status_code == 201, response.content
    statements = [
        q["sql"] for q in captured.captured_queries if not re.match(r"\s*(SAVEPOINT|RELEASE|BEGIN|COMMIT)", q["sql"])
    ]
    assert len(statements) == (2 if connection.vendor == "postgresql" else 4), statements
    # The caller's capabilities are never loaded: an owner's grant is visible to the owner whatever they hold.
    assert not [sql for sql in statements if "auth_permission" in sql]


def test_another_users_grant_is_not_found(api, grant):
    dave = make_user("dave", groups=("engineers",))

    response = api(dave).post(certificate_url(grant), {"public_key": openssh_public(ed25519_key())})

    assert response.status_code == 404
    assert not IssuedCertificate.objects.exists()


def test_an_auditor_sees_the_grant_but_gets_no_certificate_for_it(api, auditor, grant):
    response = api(auditor).post(certificate_url(grant), {"public_key": openssh_public(ed25519_key())})

    assert response.status_code == 403
    assert response.json() == {
        "detail": "only the grant's owner can get a certificate for it",
        "code": "permission_denied",
    }
    assert not IssuedCertificate.objects.exists()


def test_anonymous_caller_gets_no_certificate(grant):
    response = APIClient().post(certificate_url(grant), {"public_key": openssh_public(ed25519_key())}, format="json")

    assert response.status_code in (401, 403)
    assert not IssuedCertificate.objects.exists()


def test_revoked_grant_is_a_409_with_a_readable_message(api, requester, revoker, grant):
    services.grant_revoke(grant=grant, by=revoker, reason="incident over")

    response = api(requester).post(certificate_url(grant), {"public_key": openssh_public(ed25519_key())})

    assert response.status_code == 409
    assert response.json()["detail"].startswith("the grant was revoked at ")


def test_owner_no_longer_eligible_is_a_403(api, requester, grant):
    requester.groups.clear()

    response = api(requester).post(certificate_url(grant), {"public_key": openssh_public(ed25519_key())})

    assert response.status_code == 403
    assert response.json() == {"detail": "alice is no longer eligible for role web-ssh", "code": "not_honoured"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"public_key": "ssh-rsa AAAA"}, "is not an OpenSSH public key"),
        ({"public_key": ""}, "may not be blank"),
        ({}, "required"),
        ({"public_key": "x" * 20000}, "no more than 16384 characters"),
    ],
)
def test_bad_public_key_is_a_400_naming_public_key(api, requester, grant, body, message):
    response = api(requester).post(certificate_url(grant), body)

    assert response.status_code == 400
    assert set(response.json()) == {"public_key"}
    assert message in response.json()["public_key"][0]


def test_short_rsa_key_is_a_400_saying_how_long_it_must_be(api, requester, grant):
    response = api(requester).post(certificate_url(grant), {"public_key": openssh_public(rsa_key(2048))})

    assert response.status_code == 400
    assert response.json() == {"public_key": ["rsa keys must have at least 3072 bits; this one has 2048"]}


# --- GET /ca/ssh/ ---------------------------------------------------------------------------------


def test_anonymous_ca_get_before_any_ca_is_a_404_naming_the_command_and_creates_nothing(db):
    for response in (APIClient().get(CA), APIClient().get(CA, {"format": "json"})):
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json() == {"detail": "no SSH CA yet: run manage.py ssh_ca init", "code": "no_ssh_ca"}

    assert not SSHCertificateAuthority.objects.exists()
    assert not AuditEvent.objects.filter(action="ssh_ca.created").exists()


def test_ca_keys_are_public_one_per_line_ready_for_trusted_user_ca_keys(db):
    ca, _ = ssh_ca_init()
    response = APIClient().get(CA)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == ca.public_key + "\n"
    assert ca.public_key.startswith("ssh-ed25519 ") and ca.public_key.endswith(f" jitportal-{ca.name}")


def test_ca_endpoint_ignores_a_bad_token_rather_than_refusing(db):
    ssh_ca_init()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token jit_expired")

    assert client.get(CA).status_code == 200


def test_ca_keys_after_rotation_list_both_and_json_says_which_signs(db):
    ssh_ca_init()
    old = SSHCertificateAuthority.objects.get()
    new = ssh_ca_rotate(trust_old_for=timedelta(days=7)).new

    text = APIClient().get(CA).content.decode()
    as_json = APIClient().get(CA, {"format": "json"})
    by_accept = APIClient().get(CA, HTTP_ACCEPT="application/json")

    assert text.splitlines() == [new.public_key, old.public_key]
    assert as_json.status_code == 200 and as_json.json() == by_accept.json()
    keys = as_json.json()["keys"]
    assert [(k["name"], k["signing"]) for k in keys] == [(new.name, True), (old.name, False)]
    assert keys[0]["fingerprint"] == new.fingerprint and keys[1]["trusted_until"] is not None


def test_no_endpoint_ever_returns_the_ca_private_key(api, requester, auditor, grant, host_agent):
    ssh_ca_init()
    responses = [
        APIClient().get(CA),
        APIClient().get(CA, {"format": "json"}),
        api(requester).post(certificate_url(grant), {"public_key": openssh_public(ed25519_key())}),
        api(auditor).get("/api/v1/audit/"),
        host_agent.get(REVOKED),
        host_agent.get(principals_url("web-1")),
    ]
    private = SSHCertificateAuthority.objects.get().private_key
    secret_body = "".join(private.splitlines()[1:-1])

    for response in responses:
        assert response.status_code in (200, 201)
        content = response.content.decode()
        assert "PRIVATE KEY" not in content and secret_body[:40] not in content


# --- host side: principals --------------------------------------------------------------------------


def test_principals_for_a_host_by_name_or_id_as_text(host_agent, requester, reviewer, grant, web1):
    web_ops = make_role("web-ops", logins=["root"])
    made = services.request_create(requester=requester, roles=[web_ops], reason="INC-2")
    services.request_review(request=made, reviewer=reviewer, decision="approve")

    by_name = host_agent.get(principals_url("web-1"))
    by_id = host_agent.get(principals_url(web1.pk))

    assert by_name.status_code == 200
    assert by_name["Content-Type"] == "text/plain; charset=utf-8"
    assert by_name.content.decode() == "deploy@web-1\nroot@web-1\nubuntu@web-1\n"
    assert by_id.content == by_name.content


def test_principals_filtered_by_login_for_authorized_principals_command(host_agent, grant):
    assert host_agent.get(principals_url("web-1"), {"login": "ubuntu"}).content.decode() == "ubuntu@web-1\n"
    assert host_agent.get(principals_url("web-1"), {"login": "nobody"}).content.decode() == ""
    as_json = host_agent.get(principals_url("web-1"), {"login": "deploy", "format": "json"})
    assert as_json.json() == {"resource": "node/web-1", "principals": ["deploy@web-1"]}


def test_principals_of_an_unknown_host_are_a_404(host_agent, web_ssh):
    response = host_agent.get(principals_url("nope"))

    assert response.status_code == 404
    assert response.content.decode() == "no such resource: node/nope\n"


def test_a_holder_of_check_access_may_read_host_material_with_a_session(api, web_ssh, web1):
    holder = give_capabilities(make_user("ops"), "check_access")

    assert api(holder).get(principals_url("web-1")).status_code == 200
    assert api(holder).get(REVOKED).status_code == 200


@pytest.mark.parametrize("url", [principals_url("web-1"), REVOKED])
@pytest.mark.parametrize("who", ["requester", "staff", "auditor", "revoker"])
def test_host_material_is_refused_without_check_access(request, api, url, who, web_ssh, web1):
    user = request.getfixturevalue(who)
    assert APIClient().get(url).status_code == 401
    people = api(user).get(url)
    assert people.status_code == 403
    assert people.content.decode() == "You need the check_access capability.\n"
    # A token made with the flag does not help a user who lacks the capability.
    assert token_client(user, can_check_access=True).get(url, HTTP_ACCEPT="application/json").status_code == 403


@pytest.mark.parametrize("url", [principals_url("web-1"), REVOKED])
def test_host_material_needs_the_token_flag_as_well_as_the_capability(url, web_ssh, web1):
    agent = give_capabilities(make_user("agent"), "check_access")

    response = token_client(agent).get(url, HTTP_ACCEPT="application/json")

    assert response.status_code == 403
    assert "can check access" in response.json()["detail"]


@pytest.mark.parametrize("lose_access", ["relabel", "leave the group", "deactivate"])
def test_host_endpoints_follow_the_access_check_at_once(api, requester, grant, web1, host_agent, lose_access):
    make_role("any-env-ssh", resource_labels={"env": ["*"]}, logins=["ubuntu"])
    key = ed25519_key()
    assert api(requester).post(certificate_url(grant), {"public_key": openssh_public(key)}).status_code == 201
    assert host_agent.get(principals_url("web-1"), {"login": "ubuntu"}).content.decode() == "ubuntu@web-1\n"
    assert host_agent.get(REVOKED).content.decode() == ""

    if lose_access == "relabel":
        resource_upsert(kind="node", name="web-1", labels={"env": "staging"})
    elif lose_access == "leave the group":
        requester.groups.clear()
    else:
        requester.is_active = False
        requester.save(update_fields=["is_active"])

    assert host_agent.get(principals_url("web-1"), {"login": "ubuntu"}).content.decode() == ""
    assert host_agent.get(REVOKED).content.decode() == openssh_public(key) + "\n"
    check = host_agent.get("/api/v1/access-check/", {"user": "alice", "resource": "node/web-1", "login": "ubuntu"})
    assert check.json()["allowed"] is False


# --- host side: revoked keys --------------------------------------------------------------------------


def test_revoked_keys_list_the_subject_keys_of_revoked_grants(api, requester, revoker, grant, host_agent):
    key, other = ed25519_key(), ed25519_key()
    api(requester).post(certificate_url(grant), {"public_key": openssh_public(key)})
    empty = host_agent.get(REVOKED)
    assert empty.content.decode() == ""
    assert empty["Content-Type"] == "text/plain; charset=utf-8"

    services.grant_revoke(grant=grant, by=revoker, reason="incident over")

    response = host_agent.get(REVOKED)
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == openssh_public(key) + "\n"
    assert openssh_public(other) not in response.content.decode()
    assert host_agent.get(REVOKED, {"format": "json"}).json() == {"keys": [openssh_public(key)]}


def test_host_endpoints_use_a_fixed_number_of_queries(
    api, requester, reviewer, revoker, web_ssh, web1, web2, host_agent, django_assert_max_num_queries
):
    for _ in range(3):
        made = services.request_create(requester=requester, resources=[web1, web2], reason="INC-1")
        services.request_review(request=made, reviewer=reviewer, decision="approve")
        for grant in made.grants.all():
            api(requester).post(certificate_url(grant), {"public_key": openssh_public(ed25519_key())})
            services.grant_revoke(grant=grant, by=revoker, reason="done")
    for i in range(5):
        role = make_role(f"extra-{i}", logins=[f"login{i}"])
        made = services.request_create(requester=requester, roles=[role], reason="INC-1")
        services.request_review(request=made, reviewer=reviewer, decision="approve")

    # The token and its user, knox's cleanup of the user's expired tokens, the user's and its groups'
    # permissions (check_access), the roles' selectors, then the list (and for principals the
    # resource): nothing per certificate, grant or role.
    with django_assert_max_num_queries(6):
        revoked = host_agent.get(REVOKED)
    with django_assert_max_num_queries(7):
        principals = host_agent.get(principals_url("web-1"))

    assert len(revoked.content.decode().splitlines()) == 6
    assert len(principals.content.decode().splitlines()) == 5
