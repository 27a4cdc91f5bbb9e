"""The access check: may this user use this login on this resource right now?"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from accounts.models import ApiToken
from requests_app import services
from requests_app.models import AccessRequest, Grant
from tests.conftest import give_capabilities, make_role, make_user

CHECK = "/api/v1/access-check/"


def approve(access_request: AccessRequest, *reviewers) -> AccessRequest:
    for reviewer in reviewers:
        services.request_review(request=access_request, reviewer=reviewer, decision="approve")
    access_request.refresh_from_db()
    assert access_request.state == AccessRequest.State.APPROVED
    return access_request


@pytest.fixture
def alice_grant(requester, reviewer, reviewer2, prod_ssh, web1, web2, dev1) -> Grant:
    """Alice may use ``ubuntu`` on web-1 (not web-2) for the next 30 minutes."""
    made = services.request_create(requester=requester, resources=[web1], reason="INC-1", duration="30m")
    return approve(made, reviewer, reviewer2).grants.get()


def check(client, **params):
    response = client.get(CHECK, params)
    assert response.status_code == 200, response.content
    return response.json()


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


# --- the caller's own access -----------------------------------------------------------


def test_defaults_to_the_caller_and_reports_the_grant(api, requester, alice_grant):
    body = check(api(requester), resource="node/web-1", login="ubuntu")

    assert body["allowed"] is True
    assert body["grant"] == alice_grant.pk
    assert parse_datetime(body["expires_at"]) == alice_grant.expires_at


def test_resource_by_id_or_kind_name(api, requester, alice_grant, web1):
    client = api(requester)

    assert check(client, resource=web1.pk, login="ubuntu")["allowed"] is True
    assert check(client, resource="node/web-1", login="ubuntu")["allowed"] is True


def test_without_a_login_the_grant_alone_decides(api, requester, alice_grant):
    assert check(api(requester), resource="node/web-1")["allowed"] is True


def test_neighbour_resource_is_not_opened(api, requester, alice_grant):
    body = check(api(requester), resource="node/web-2", login="ubuntu")

    assert body == {"allowed": False, "grant": None, "expires_at": None, "reason": body["reason"], "code": "no_grant"}
    assert body["reason"]


@pytest.mark.parametrize("login", ["root", "postgres", "", " ", "UBUNTU"])
def test_login_outside_the_role_is_refused(api, requester, alice_grant, login):
    body = check(api(requester), resource="node/web-1", login=login)

    assert body["allowed"] is False
    assert body["grant"] is None


def test_user_without_any_grant_is_refused(api, requester, prod_ssh, web1):
    assert check(api(requester), resource="node/web-1", login="ubuntu")["allowed"] is False


def test_role_based_grant_covers_what_the_role_matches_only(
    api, requester, reviewer, reviewer2, prod_ssh, web1, web2, dev1
):
    approve(services.request_create(requester=requester, roles=[prod_ssh], reason="INC-1"), reviewer, reviewer2)
    client = api(requester)

    assert check(client, resource="node/web-1", login="ubuntu")["allowed"] is True
    assert check(client, resource="node/web-2", login="ubuntu")["allowed"] is True
    assert check(client, resource="node/dev-1", login="ubuntu")["allowed"] is False


# --- fail closed ------------------------------------------------------------------------


def test_expired_grant_denies_without_any_sweep(api, requester, alice_grant):
    now = timezone.now()
    Grant.objects.filter(pk=alice_grant.pk).update(
        starts_at=now - timedelta(hours=1), expires_at=now - timedelta(seconds=1)
    )

    body = check(api(requester), resource="node/web-1", login="ubuntu")

    assert body["allowed"] is False
    assert AccessRequest.objects.get().state == AccessRequest.State.APPROVED  # nothing swept


def test_grant_not_yet_started_denies(api, requester, alice_grant):
    now = timezone.now()
    Grant.objects.filter(pk=alice_grant.pk).update(
        starts_at=now + timedelta(minutes=5), expires_at=now + timedelta(hours=1)
    )

    assert check(api(requester), resource="node/web-1", login="ubuntu")["allowed"] is False


def test_leaving_the_requesting_group_ends_access(api, requester, alice_grant):
    requester.groups.clear()

    body = check(api(requester), resource="node/web-1", login="ubuntu")

    assert body["allowed"] is False
    assert "prod-ssh" in body["reason"]


def test_deactivated_user_is_refused(api, requester, checker, alice_grant):
    requester.is_active = False
    requester.save(update_fields=["is_active"])

    assert check(api(checker), user="alice", resource="node/web-1", login="ubuntu")["allowed"] is False


# --- bad parameters ---------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?resource=", "?resource=%20%20", "?login=ubuntu"])
def test_missing_resource_is_400(api, requester, alice_grant, query):
    response = api(requester).get(f"{CHECK}{query}")

    assert response.status_code == 400
    assert "resource" in response.json()


@pytest.mark.parametrize("resource", ["web-1", "node/", "/web-1"])
def test_resource_that_is_neither_id_nor_kind_name_is_400(api, requester, alice_grant, resource):
    response = api(requester).get(CHECK, {"resource": resource})

    assert response.status_code == 400
    assert "resource" in response.json()


@pytest.mark.parametrize("resource", ["node/web-9", "db/web-1", "987654", "99999999999999999999999"])
def test_unknown_resource_is_answered_like_an_existing_one_without_a_grant(api, requester, alice_grant, db1, resource):
    client = api(requester)
    missing = client.get(CHECK, {"resource": resource, "login": "ubuntu"})
    hidden = client.get(CHECK, {"resource": "db/orders", "login": "ubuntu"})  # exists; alice may not even search it

    assert (missing.status_code, missing["Content-Type"], missing.content) == (
        hidden.status_code,
        hidden["Content-Type"],
        hidden.content,
    )
    assert missing.json() == {
        "allowed": False,
        "grant": None,
        "expires_at": None,
        "reason": "no active grant covers this resource",
        "code": "no_grant",
    }


# --- checking someone else --------------------------------------------------------------


@pytest.fixture
def checker(db):
    """A host agent's account: holds ``check_access``, nothing else."""
    return give_capabilities(make_user("host-agent"), "check_access")


@pytest.mark.parametrize("who", ["reviewer", "staff", "auditor", "revoker"])
def test_without_check_access_nobody_checks_another_user_with_a_session(request, api, alice_grant, who):
    response = api(request.getfixturevalue(who)).get(CHECK, {"user": "alice", "resource": "node/web-1"})

    assert response.status_code == 403
    assert response.json()["detail"] == "You need the check_access capability."


def test_without_check_access_a_token_made_with_the_flag_is_refused(reviewer, alice_grant):
    _, token = ApiToken.objects.create(user=reviewer, can_check_access=True)

    response = token_client(token).get(CHECK, {"user": "alice", "resource": "node/web-1"})

    assert response.status_code == 403
    assert response.json()["detail"] == "You need the check_access capability."


def test_naming_yourself_needs_no_permission(api, requester, alice_grant):
    assert check(api(requester), user="alice", resource="node/web-1", login="ubuntu")["allowed"] is True


def test_check_access_reports_the_named_users_access(api, checker, reviewer, alice_grant):
    client = api(checker)

    assert check(client, user="alice", resource="node/web-1", login="ubuntu")["allowed"] is True
    assert check(client, user="bob", resource="node/web-1", login="ubuntu")["allowed"] is False
    assert check(client, resource="node/web-1", login="ubuntu")["allowed"] is False  # the agent's own


def test_check_access_through_a_group_counts(api, alice_grant):
    agent = make_user("agent-2", groups=("host-agents",))
    give_capabilities(Group.objects.get(name="host-agents"), "check_access")

    assert check(api(agent), user="alice", resource="node/web-1", login="ubuntu")["allowed"] is True


def test_token_with_check_permission_may_check_any_user(checker, alice_grant):
    _, token = ApiToken.objects.create(user=checker, can_check_access=True)
    client = token_client(token)

    assert check(client, user="alice", resource="node/web-1", login="ubuntu")["allowed"] is True
    assert check(client, user="alice", resource="node/web-1", login="root")["allowed"] is False
    assert check(client, user="alice", resource="node/web-2", login="ubuntu")["allowed"] is False


def test_a_token_further_restricts_the_capability(checker, alice_grant):
    """A token of a holder of check_access must also be made with "can check access"."""
    ApiToken.objects.create(user=checker, can_check_access=True)
    _, plain = ApiToken.objects.create(user=checker)

    response = token_client(plain).get(CHECK, {"user": "alice", "resource": "node/web-1"})

    assert response.status_code == 403
    assert response.json()["detail"].startswith("You need the check_access capability. This token")


def test_unknown_user_is_404(api, checker, alice_grant):
    response = api(checker).get(CHECK, {"user": "nobody", "resource": "node/web-1"})

    assert response.status_code == 404
    assert "nobody" in response.json()["detail"]


def test_two_grants_the_longest_one_is_reported(api, requester, reviewer, reviewer2, prod_ssh, web1, alice_grant):
    later = services.request_create(requester=requester, resources=[web1], reason="INC-2", duration="50m")
    longer = approve(later, reviewer, reviewer2).grants.get()

    body = check(api(requester), resource="node/web-1", login="ubuntu")

    assert body["grant"] == longer.pk
    assert parse_datetime(body["expires_at"]) == longer.expires_at


def test_grant_for_another_role_login_is_checked_against_that_role(api, requester, reviewer, db1):
    make_role("prod-db", resource_kinds=["db"], logins=["postgres"], reviewers=("sre-leads",))
    made = services.request_create(requester=requester, resources=[db1])
    approve(made, reviewer)
    client = api(requester)

    assert check(client, resource="db/orders", login="postgres")["allowed"] is True
    assert check(client, resource="db/orders", login="ubuntu")["allowed"] is False


# --- the decision's code: what a program branches on ------------------------------------


def test_every_decision_carries_a_stable_code_beside_its_reason(api, checker, requester, alice_grant):
    client = api(checker)

    def code(**params) -> str:
        return check(client, user="alice", **params)["code"]

    assert code(resource="node/web-1", login="ubuntu") == "allowed"
    assert code(resource="node/web-2", login="ubuntu") == "no_grant"
    assert code(resource="node/no-such-host", login="ubuntu") == "no_grant"
    assert code(resource="node/web-1", login="root") == "login_not_allowed"
    requester.groups.clear()  # alice may no longer request the role: her grant is no longer honoured
    assert code(resource="node/web-1", login="ubuntu") == "not_honoured"
    requester.is_active = False
    requester.save(update_fields=["is_active"])
    assert code(resource="node/web-1", login="ubuntu") == "user_inactive"


def test_refusals_carry_a_code_beside_the_detail(api, checker, requester, alice_grant):
    missing_user = api(checker).get(CHECK, {"user": "nobody", "resource": "node/web-1"})
    no_capability = api(requester).get(CHECK, {"user": "bob", "resource": "node/web-1"})
    anonymous = APIClient().get(CHECK, {"resource": "node/web-1"})

    assert (missing_user.status_code, missing_user.json()["code"]) == (404, "not_found")
    assert (no_capability.status_code, no_capability.json()["code"]) == (403, "capability_required")
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "not_authenticated")


@pytest.mark.django_db
def test_over_http_with_a_token_the_check_costs_two_queries_however_many_grants_are_held(
    requester, alice_grant, web1, django_assert_num_queries
):
    """The token, then one statement for the resource, the covering grants and the roles: not one more for 200."""
    _, secret = ApiToken.objects.create(user=requester)
    client = token_client(secret)
    for held in (1, 200):
        extra = held - Grant.objects.filter(user=requester).count()
        Grant.objects.bulk_create(
            Grant(
                request=alice_grant.request,
                user=requester,
                role=alice_grant.role,
                resource=web1,
                starts_at=alice_grant.starts_at,
                expires_at=alice_grant.expires_at - timedelta(seconds=i + 1),
            )
            for i in range(extra)
        )
        with django_assert_num_queries(2):
            body = check(client, resource="node/web-1", login="ubuntu")
        assert body["allowed"] is True and body["grant"] == alice_grant.pk
        with django_assert_num_queries(2):
            assert check(client, resource="node/web-1", login="root")["code"] == "login_not_allowed"
