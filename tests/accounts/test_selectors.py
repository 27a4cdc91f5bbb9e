"""Who may search what: resources_searchable_by mirrors Teleport's search_as_roles."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from accounts.selectors import (
    resources_searchable_by,
    roles_matching,
    roles_requestable_by,
)
from inventory.models import Resource
from tests.conftest import make_resource, make_role, make_user

pytestmark = pytest.mark.django_db


def names(queryset) -> set[str]:
    return {r.name for r in queryset}


def test_user_sees_only_resources_matched_by_a_role_they_may_request(requester, prod_ssh, web1, web2, dev1, db1):
    make_role("dev-ssh", requestable_by=("other-team",), resource_labels={"env": ["dev"]})
    assert names(resources_searchable_by(requester)) == {"web-1", "web-2"}


def test_resource_of_an_unlisted_kind_is_not_searchable(requester, prod_ssh, db1):
    # db1 has env=prod but prod-ssh lists only nodes.
    assert not resources_searchable_by(requester).filter(pk=db1.pk).exists()


def test_wildcard_label_value_matches_any_value_but_requires_the_key(requester):
    make_role("any-env", resource_labels={"env": ["*"]})
    make_resource("a", labels={"env": "prod"})
    make_resource("b", labels={"env": "whatever"})
    make_resource("no-env", labels={"team": "web"})
    assert names(resources_searchable_by(requester)) == {"a", "b"}


def test_every_label_key_of_a_selector_must_match(requester):
    make_role("prod-web", resource_labels={"env": ["prod"], "team": ["web", "api"]})
    make_resource("prod-web", labels={"env": "prod", "team": "web"})
    make_resource("prod-api", labels={"env": "prod", "team": "api"})
    make_resource("prod-db-team", labels={"env": "prod", "team": "db"})
    make_resource("dev-web", labels={"env": "dev", "team": "web"})
    make_resource("prod-no-team", labels={"env": "prod"})
    assert names(resources_searchable_by(requester)) == {"prod-web", "prod-api"}


def test_several_requestable_roles_union_their_resources(requester, web1, dev1, db1):
    make_role("prod-ssh", resource_labels={"env": ["prod"]})
    make_role("dev-ssh", resource_labels={"env": ["dev"]})
    assert names(resources_searchable_by(requester)) == {"web-1", "dev-1"}


def test_a_role_with_no_kinds_matches_nothing(requester, web1):
    make_role("empty", resource_kinds=[], resource_labels={})
    assert not resources_searchable_by(requester).exists()


def test_user_with_no_requestable_role_sees_nothing(outsider, prod_ssh, web1, web2):
    assert not resources_searchable_by(outsider).exists()


def test_staff_and_superusers_without_roles_see_nothing(staff, prod_ssh, web1):
    root = make_user("root", is_staff=True, is_superuser=True)
    assert not resources_searchable_by(staff).exists()
    assert not resources_searchable_by(root).exists()


def test_reviewing_a_role_does_not_let_you_search_its_resources(reviewer, prod_ssh, web1):
    assert not resources_searchable_by(reviewer).exists()


def test_inactive_user_sees_nothing(requester, prod_ssh, web1):
    requester.is_active = False
    requester.save()
    assert roles_requestable_by(requester) == []
    assert not resources_searchable_by(requester).exists()


def test_leaving_the_requestable_group_removes_search(requester, prod_ssh, web1):
    assert resources_searchable_by(requester).exists()
    requester.groups.remove(Group.objects.get(name="engineers"))
    assert not resources_searchable_by(requester).exists()


def test_relabelled_resource_leaves_the_search(requester, prod_ssh, web1):
    from inventory.services import resource_upsert

    resource_upsert(kind="node", name="web-1", labels={"env": "dev"})
    assert not resources_searchable_by(requester).exists()


def test_roles_requestable_by_lists_each_role_once_sorted(requester):
    make_user("bob2", groups=("engineers", "sre"))
    requester.groups.add(Group.objects.get_or_create(name="sre")[0])
    make_role("zeta", requestable_by=("engineers", "sre"))
    make_role("alpha", requestable_by=("sre",))
    make_role("hidden", requestable_by=("nobody",))
    assert [r.name for r in roles_requestable_by(requester)] == ["alpha", "zeta"]


def test_roles_matching_filters_by_selector(prod_ssh, web1, dev1):
    dev = make_role("dev-ssh", resource_labels={"env": ["dev"]})
    assert roles_matching(web1, [prod_ssh, dev]) == [prod_ssh]
    assert roles_matching(dev1, [prod_ssh, dev]) == [dev]


def test_search_with_explicit_roles_uses_those_roles(requester, prod_ssh, web1, dev1):
    dev = make_role("dev-ssh", resource_labels={"env": ["dev"]})
    assert names(resources_searchable_by(requester, roles=[dev])) == {"dev-1"}
    assert not resources_searchable_by(requester, roles=[]).exists()


@pytest.mark.parametrize(
    ("kinds", "labels"),
    [
        (["node"], {"env": ["prod"]}),
        (["node", "db"], {"env": ["prod"]}),
        (["node"], {"env": ["*"]}),
        (["node"], {"env": ["prod", "dev"], "team": ["web"]}),
        (["node"], {"env": []}),
        (["node"], {}),
        ([], {"env": ["prod"]}),
        (["db"], {"env": ["*"], "team": ["*"]}),
    ],
)
def test_search_agrees_with_the_role_match_used_when_requesting(requester, kinds, labels):
    # Search filters in SQL, request_create matches in Python: they must agree.
    role = make_role("r", resource_kinds=kinds, resource_labels=labels)
    make_resource("web-1", labels={"env": "prod", "team": "web"})
    make_resource("web-2", labels={"env": "prod"})
    make_resource("dev-1", labels={"env": "dev", "team": "web"})
    make_resource("bare", labels={})
    make_resource("star", labels={"env": "*"})
    make_resource("orders", kind="db", labels={"env": "prod", "team": "web"})
    expected = {r.name for r in Resource.objects.all() if role.matches(r)}
    assert names(resources_searchable_by(requester)) == expected
