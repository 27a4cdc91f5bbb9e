"""access_check: decided from timestamps and current eligibility, failing closed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from inventory.services import resource_upsert
from requests_app.models import Grant
from requests_app.services import (
    access_check,
    grant_revoke,
    request_create,
    request_review,
)
from tests.conftest import make_resource, make_role, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops(db):
    return make_role("prod-ops", approvals=1, logins=["ubuntu", "deploy"])


def approve(req, reviewer, now=None):
    request_review(request=req, reviewer=reviewer, decision="approve", now=now)
    req.refresh_from_db()
    assert req.state == "approved"
    return req


def granted_resource(requester, reviewer, ops, resource):
    """An approved resource-based request for ``resource`` under ``ops``."""
    return approve(request_create(requester=requester, resources=[resource], roles=[ops]), reviewer)


def test_granted_resource_is_allowed_and_the_decision_names_the_grant(requester, reviewer, ops, web1):
    req = granted_resource(requester, reviewer, ops, web1)
    decision = access_check(user=requester, resource=web1, login="ubuntu")
    grant = req.grants.get()
    assert decision.allowed
    assert decision.grant == grant
    assert decision.expires_at == grant.expires_at


def test_one_resource_granted_does_not_open_its_neighbour(requester, reviewer, ops, web1, web2):
    granted_resource(requester, reviewer, ops, web1)
    decision = access_check(user=requester, resource=web2, login="ubuntu")
    assert not decision.allowed
    assert decision.grant is None


def test_login_outside_the_role_is_refused(requester, reviewer, ops, web1):
    granted_resource(requester, reviewer, ops, web1)
    assert access_check(user=requester, resource=web1, login="deploy").allowed
    decision = access_check(user=requester, resource=web1, login="root")
    assert not decision.allowed
    assert "root" in decision.reason


def test_someone_elses_grant_does_not_open_the_resource(requester, reviewer, ops, web1):
    granted_resource(requester, reviewer, ops, web1)
    colleague = make_user("frank", groups=("engineers",))
    assert not access_check(user=colleague, resource=web1, login="ubuntu").allowed


def test_role_based_grant_covers_what_the_role_matches_now(requester, reviewer, ops, web1, dev1, db1):
    approve(request_create(requester=requester, roles=[ops]), reviewer)
    assert access_check(user=requester, resource=web1, login="ubuntu").allowed
    assert not access_check(user=requester, resource=dev1, login="ubuntu").allowed
    assert not access_check(user=requester, resource=db1, login="ubuntu").allowed

    newcomer = make_resource("web-9", labels={"env": "prod"})
    assert access_check(user=requester, resource=newcomer, login="ubuntu").allowed

    web1, _ = resource_upsert(kind="node", name="web-1", labels={"env": "staging"})
    assert not access_check(user=requester, resource=web1, login="ubuntu").allowed


def test_relabelled_resource_leaves_a_resource_grant_whose_role_no_longer_matches(requester, reviewer, ops, web1):
    granted_resource(requester, reviewer, ops, web1)
    web1, _ = resource_upsert(kind="node", name="web-1", labels={"env": "dev"})
    assert not access_check(user=requester, resource=web1, login="ubuntu").allowed


def test_revoked_grant_is_denied(requester, reviewer, revoker, ops, web1):
    req = granted_resource(requester, reviewer, ops, web1)
    grant_revoke(grant=req.grants.get(), by=revoker, reason="incident over")
    assert not access_check(user=requester, resource=web1, login="ubuntu").allowed


def test_expired_grant_is_denied_although_no_sweep_ran(requester, reviewer, ops, web1):
    req = granted_resource(requester, reviewer, ops, web1)
    grant = req.grants.get()
    # Nothing marks the grant: only its timestamps decide.
    assert access_check(
        user=requester, resource=web1, login="ubuntu", at=grant.expires_at - timedelta(seconds=1)
    ).allowed
    assert not access_check(user=requester, resource=web1, login="ubuntu", at=grant.expires_at).allowed
    now = timezone.now()
    Grant.objects.filter(pk=grant.pk).update(starts_at=now - timedelta(hours=1), expires_at=now - timedelta(seconds=1))
    assert not access_check(user=requester, resource=web1, login="ubuntu").allowed


def test_leaving_the_requestable_group_ends_access(requester, reviewer, ops, web1):
    granted_resource(requester, reviewer, ops, web1)
    requester.groups.remove(Group.objects.get(name="engineers"))
    decision = access_check(user=requester, resource=web1, login="ubuntu")
    assert not decision.allowed
    assert "eligible" in decision.reason


def test_inactive_user_is_denied(requester, reviewer, ops, web1):
    granted_resource(requester, reviewer, ops, web1)
    requester.is_active = False
    requester.save()
    decision = access_check(user=requester, resource=web1, login="ubuntu")
    assert not decision.allowed
    assert "not active" in decision.reason


def test_user_without_grants_is_denied(outsider, web1):
    assert not access_check(user=outsider, resource=web1, login="ubuntu").allowed


def test_check_without_login_asks_only_about_the_resource(requester, reviewer, ops, web1, web2):
    granted_resource(requester, reviewer, ops, web1)
    assert access_check(user=requester, resource=web1).allowed
    assert not access_check(user=requester, resource=web2).allowed


def test_a_later_grant_still_allows_after_an_earlier_one_is_revoked(requester, reviewer, revoker, ops, web1):
    first = granted_resource(requester, reviewer, ops, web1)
    second = granted_resource(requester, reviewer, ops, web1)
    grant_revoke(grant=first.grants.get(), by=revoker, reason="rotate")
    decision = access_check(user=requester, resource=web1, login="ubuntu")
    assert decision.allowed
    assert decision.grant == second.grants.get()


def add_live_grants(user, role, resource, count: int) -> None:
    """``count`` more live grants that could all cover ``resource`` (half role-based), made directly."""
    now = timezone.now()
    req = request_create(requester=user, roles=[role])
    Grant.objects.bulk_create(
        Grant(
            request=req,
            user=user,
            role=role,
            resource=resource if i % 2 else None,
            starts_at=now - timedelta(minutes=1),
            expires_at=now + timedelta(hours=1),
        )
        for i in range(count)
    )


@pytest.mark.parametrize("grants", [1, 30])
def test_access_check_is_one_statement_whatever_the_number_of_grants(
    requester, reviewer, ops, web1, web2, django_assert_num_queries, grants
):
    granted_resource(requester, reviewer, ops, web1)
    add_live_grants(requester, ops, web1, grants - 1)
    assert Grant.objects.active(at=timezone.now()).filter(user=requester).count() == grants
    # One statement: per role, the latest grant that could cover the resource, the user's
    # eligibility for the role and the resource itself; allowed or refused alike.
    with django_assert_num_queries(1):
        assert access_check(user=requester, resource=web1, login="ubuntu").allowed
    with django_assert_num_queries(1):
        assert not access_check(user=requester, resource=web1, login="root").allowed
    # Only the role-based grants can cover a neighbour.
    with django_assert_num_queries(1):
        assert access_check(user=requester, resource=web2, login="ubuntu").allowed is (grants > 1)
    # By reference (as the API asks) it is the same one statement, the resource resolved inside it.
    with django_assert_num_queries(1):
        assert access_check(user=requester, resource="node/web-1", login="ubuntu").allowed
    with django_assert_num_queries(1):
        assert access_check(user=requester, resource=str(web1.pk), login="ubuntu").allowed
    with django_assert_num_queries(1):
        assert access_check(user=requester, resource="node/no-such-host", login="ubuntu").code == "no_grant"
    # A refusal for a grant no longer honoured says why, with no query more.
    requester.groups.clear()
    with django_assert_num_queries(1):
        decision = access_check(user=requester, resource=web1, login="ubuntu")
    assert decision.reason == "alice is no longer eligible for role prod-ops"


def test_among_several_roles_the_answer_is_the_latest_grant_of_a_role_allowing_the_login(requester, ops, web1, web2):
    rooted = make_role("web-root", logins=["root"])
    now = timezone.now()

    def grant(role, resource, minutes):
        return Grant.objects.create(
            request=request_create(requester=requester, roles=[role]),
            user=requester,
            role=role,
            resource=resource,
            starts_at=now - timedelta(minutes=1),
            expires_at=now + timedelta(minutes=minutes),
        )

    ops_short, ops_long = grant(ops, web1, 30), grant(ops, None, 60)
    root_grant = grant(rooted, web1, 120)
    assert ops_short.expires_at < ops_long.expires_at < root_grant.expires_at

    assert access_check(user=requester, resource=web1, login="ubuntu").grant == ops_long
    assert access_check(user=requester, resource=web1, login="root").grant == root_grant
    assert access_check(user=requester, resource=web1).grant == root_grant
    # On the neighbour only the role-wide grant of ops covers it.
    assert access_check(user=requester, resource=web2).grant == ops_long
    assert access_check(user=requester, resource=web2, login="root").code == "login_not_allowed"

    # Eligibility is per role: losing web-root refuses root, naming it, and leaves ubuntu allowed.
    rooted.requestable_by.set([Group.objects.get_or_create(name="root-holders")[0]])
    refused = access_check(user=requester, resource=web1, login="root")
    assert (refused.code, refused.reason) == ("not_honoured", "alice is no longer eligible for role web-root")
    assert access_check(user=requester, resource=web1, login="ubuntu").grant == ops_long
