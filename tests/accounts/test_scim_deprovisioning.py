"""A SCIM deactivation or removal from a group ends what it gave at once, with no sweep.

Alice holds a live grant on web-1 through the engineers group and has a
certificate for it. After one SCIM call from the identity provider, each of
the four places that honour grants says so on the next request: the access
check, certificate issuance, the host's principals and the revoked keys.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import token_create
from requests_app import services
from requests_app.credentials.ca import ssh_ca_init
from requests_app.models import Grant
from tests.conftest import give_capabilities, make_role, make_user
from tests.ssh.keys import ed25519_key, openssh_public

pytestmark = pytest.mark.django_db

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
REVOKED = "/api/v1/ssh/revoked-keys/"
PRINCIPALS = "/api/v1/resources/web-1/ssh-principals/"
CHECK = "/api/v1/access-check/"


def client_with(user, *, bearer: bool = False, can_check_access: bool = False) -> APIClient:
    _, secret = token_create(user=user, can_check_access=can_check_access, by=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{'Bearer' if bearer else 'Token'} {secret}")
    return client


@pytest.fixture
def world(requester, reviewer, web1):
    make_role("web-ssh", approvals=1, logins=["ubuntu"])
    ssh_ca_init()
    made = services.request_create(requester=requester, resources=[web1], reason="INC-7")
    services.request_review(request=made, reviewer=reviewer, decision="approve")
    grant = made.grants.get()
    alice = client_with(requester)
    key = ed25519_key()
    issued = alice.post(f"/api/v1/grants/{grant.pk}/certificate/", {"public_key": openssh_public(key)}, format="json")
    assert issued.status_code == 201, issued.content
    host = client_with(give_capabilities(make_user("web-1-agent"), "check_access"), can_check_access=True)
    idp = client_with(give_capabilities(make_user("entra-scim"), "scim"), bearer=True)
    return {"grant": grant, "alice": alice, "keys": {openssh_public(key)}, "host": host, "idp": idp}


def scim_patch(idp: APIClient, path: str, *operations) -> None:
    body = json.dumps({"schemas": [PATCH_SCHEMA], "Operations": list(operations)})
    response = idp.patch(f"/scim/v2{path}", data=body, content_type="application/scim+json")
    assert response.status_code == 200, response.content


def what_hosts_and_owner_see(world) -> dict:
    host, alice, grant = world["host"], world["alice"], world["grant"]
    check = host.get(CHECK, {"user": "alice", "resource": "node/web-1", "login": "ubuntu"})
    assert check.status_code == 200, check.content
    key = openssh_public(ed25519_key())
    certificate = alice.post(f"/api/v1/grants/{grant.pk}/certificate/", {"public_key": key}, format="json")
    if certificate.status_code == 201:
        world["keys"].add(key)
    return {
        "access_check": check.json()["allowed"],
        "certificate": certificate.status_code,
        "principals": host.get(PRINCIPALS).content.decode(),
        "revoked_keys": set(host.get(REVOKED).content.decode().splitlines()),
    }


HONOURED = {"access_check": True, "certificate": 201, "principals": "ubuntu@web-1\n", "revoked_keys": set()}


def deactivate_okta(world, user, group):
    scim_patch(world["idp"], f"/Users/{user.pk}", {"op": "replace", "value": {"active": False}})


def deactivate_entra(world, user, group):
    scim_patch(world["idp"], f"/Users/{user.pk}", {"op": "Replace", "path": "active", "value": "False"})


def delete_user(world, user, group):
    assert world["idp"].delete(f"/scim/v2/Users/{user.pk}").status_code == 204


def remove_member_okta(world, user, group):
    scim_patch(world["idp"], f"/Groups/{group.pk}", {"op": "remove", "path": f'members[value eq "{user.pk}"]'})


def remove_member_entra(world, user, group):
    scim_patch(
        world["idp"], f"/Groups/{group.pk}", {"op": "Remove", "path": "members", "value": [{"value": str(user.pk)}]}
    )


@pytest.mark.parametrize(
    ("deprovision", "certificate_refusal"),
    [
        # A deactivated owner's own token is refused (401) before any grant is looked at.
        (deactivate_okta, 401),
        (deactivate_entra, 401),
        (delete_user, 401),
        # Still signed in, but no longer eligible for the role: the grant is not honoured (403).
        (remove_member_okta, 403),
        (remove_member_entra, 403),
    ],
)
def test_every_place_that_honours_grants_flips_after_one_scim_call(world, requester, deprovision, certificate_refusal):
    assert what_hosts_and_owner_see(world) == HONOURED

    deprovision(world, requester, Group.objects.get(name="engineers"))

    assert what_hosts_and_owner_see(world) == {
        "access_check": False,
        "certificate": certificate_refusal,
        "principals": "",
        # Every key certified for the grant, the one from before the check above included.
        "revoked_keys": world["keys"],
    }
    # No sweep ran: the grant row itself is untouched, the check reads who the owner is now.
    grant = Grant.objects.get(pk=world["grant"].pk)
    assert (grant.revoked_at, grant.ended_at) == (None, None)


def test_reactivation_or_adding_back_restores_what_the_grant_still_covers(world, requester):
    engineers = Group.objects.get(name="engineers")
    deactivate_entra(world, requester, engineers)
    remove_member_okta(world, requester, engineers)
    assert what_hosts_and_owner_see(world)["access_check"] is False

    scim_patch(world["idp"], f"/Users/{requester.pk}", {"op": "Replace", "path": "active", "value": "True"})
    scim_patch(
        world["idp"],
        f"/Groups/{engineers.pk}",
        {"op": "add", "path": "members", "value": [{"value": str(requester.pk)}]},
    )

    seen = what_hosts_and_owner_see(world)
    assert (seen["access_check"], seen["certificate"], seen["principals"]) == (True, 201, "ubuntu@web-1\n")
    assert User.objects.get(pk=requester.pk).is_active is True


def test_removing_from_a_group_that_does_not_make_the_role_requestable_changes_nothing(world, requester):
    bystanders = Group.objects.create(name="book-club")
    requester.groups.add(bystanders)

    remove_member_entra(world, requester, bystanders)

    assert what_hosts_and_owner_see(world) == HONOURED


def test_a_deactivated_users_signed_in_session_and_tokens_stop_at_once(world, requester):
    browser = APIClient()
    browser.force_login(requester)
    assert browser.get("/api/v1/me/").status_code == 200
    assert world["alice"].get("/api/v1/me/").status_code == 200

    delete_user(world, requester, None)

    assert browser.get("/api/v1/me/").status_code == 401
    assert world["alice"].get("/api/v1/me/").status_code == 401
