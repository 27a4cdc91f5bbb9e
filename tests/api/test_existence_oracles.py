"""What the caller may not see is answered exactly like what does not exist.

Each test asks about something that exists but is hidden from the caller,
then deletes it and asks again with the very same words: the two answers must
be the same bytes, on the API and on the pages.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts.models import Role
from requests_app.models import AccessRequest
from tests.conftest import make_role, make_user

REQUESTS = "/api/v1/requests/"
CHECK = "/api/v1/access-check/"


def answer(response) -> tuple:
    return response.status_code, response["Content-Type"], response.content


def page(response) -> tuple:
    """A page's answer, less the CSRF token that differs on every response."""
    body = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", response.content)
    return response.status_code, response["Content-Type"], body


@pytest.fixture
def prod_db(db):
    """A role alice may not request: databases, for the dba group only."""
    return make_role("prod-db", resource_kinds=["db"], requestable_by=("dba",), reviewers=("db-leads",))


@pytest.fixture
def dave(db):
    """An engineer: exists, and reviews nothing."""
    return make_user("dave", groups=("engineers",))


# --- resources ----------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["id", "ref"])
def test_request_for_a_hidden_resource_is_answered_as_for_a_missing_one(api, requester, prod_ssh, web1, db1, by):
    ref = db1.pk if by == "id" else "db/orders"
    body = {"resources": ["node/web-1", ref], "reason": "INC-1"}
    client = api(requester)

    hidden = client.post(REQUESTS, body)
    db1.delete()
    missing = client.post(REQUESTS, body)

    assert answer(hidden) == answer(missing)
    assert hidden.json() == {"resources": [f"no such resource: {ref}"]}
    assert not AccessRequest.objects.exists()


def test_a_resource_outside_every_requestable_role_is_hidden_even_with_the_role_named(api, requester, prod_ssh, dev1):
    body = {"resources": ["node/dev-1"], "roles": ["prod-ssh"], "reason": "INC-1"}
    client = api(requester)

    hidden = client.post(REQUESTS, body)
    dev1.delete()
    missing = client.post(REQUESTS, body)

    assert answer(hidden) == answer(missing)
    assert hidden.status_code == 400


def test_request_page_for_a_hidden_resource_is_the_missing_resource_page(client, requester, prod_ssh, web1, db1):
    client.force_login(requester)
    urls = [f"{reverse('request-new')}?resource={ref}" for ref in (db1.pk, "db/orders")]

    def both(url):
        return page(client.get(url)), page(client.post(url, {"reason": "x", "duration": "900"}))

    hidden = [both(url) for url in urls]
    db1.delete()
    missing = [both(url) for url in urls]

    assert hidden == missing
    assert all(b"no such resource: " in get[2] and get[0] == 400 for get, _ in hidden)
    assert not AccessRequest.objects.exists()


def test_resource_detail_of_a_hidden_resource_is_the_missing_resource_404(api, requester, prod_ssh, db1):
    client = api(requester)
    url = f"/api/v1/resources/{db1.pk}/"

    hidden = client.get(url)
    db1.delete()
    missing = client.get(url)

    assert answer(hidden) == answer(missing)
    assert hidden.status_code == 404


def test_access_check_of_a_missing_resource_is_the_no_grant_answer(api, requester, prod_ssh, web1, db1):
    client = api(requester)
    params = {"resource": "db/orders", "login": "ubuntu"}

    hidden = client.get(CHECK, params)
    db1.delete()
    missing = client.get(CHECK, params)

    assert answer(hidden) == answer(missing)
    assert missing.status_code == 200
    assert missing.json()["allowed"] is False


# --- roles --------------------------------------------------------------------------------


def test_request_for_a_role_one_may_not_request_is_answered_as_for_a_missing_role(api, requester, prod_db):
    body = {"roles": ["prod-db"], "reason": "INC-1"}
    client = api(requester)

    hidden = client.post(REQUESTS, body)
    prod_db.delete()
    missing = client.post(REQUESTS, body)

    assert answer(hidden) == answer(missing)
    assert hidden.json() == {"roles": ["no such role: prod-db"]}


def test_request_page_for_a_role_one_may_not_request_is_the_missing_role_page(client, requester, prod_db):
    client.force_login(requester)
    url = f"{reverse('request-new')}?role=prod-db"

    hidden = page(client.get(url)), page(client.post(url, {"reason": "x", "duration": "900"}))
    prod_db.delete()
    missing = page(client.get(url)), page(client.post(url, {"reason": "x", "duration": "900"}))

    assert hidden == missing
    assert b"no such role: prod-db" in hidden[0][2]


def test_role_detail_of_a_role_one_may_not_request_is_the_missing_role_404(api, requester, prod_db):
    client = api(requester)

    hidden = client.get("/api/v1/roles/prod-db/")
    Role.objects.filter(pk=prod_db.pk).delete()
    missing = client.get("/api/v1/roles/prod-db/")

    assert answer(hidden) == answer(missing)
    assert hidden.status_code == 404


# --- suggested reviewers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"reason": "INC-1"},
        {},  # another error too (prod-ssh needs a reason): still the same answer
        {"reason": "INC-1", "duration": "9h"},
    ],
)
def test_an_ineligible_suggested_reviewer_is_answered_as_an_unknown_user(api, requester, prod_ssh, web1, dave, extra):
    body = {"resources": ["node/web-1"], "suggested_reviewers": ["dave"], **extra}
    client = api(requester)

    ineligible = client.post(REQUESTS, body)
    dave.delete()
    unknown = client.post(REQUESTS, body)

    assert answer(ineligible) == answer(unknown)
    assert ineligible.status_code == 400
    assert not AccessRequest.objects.exists()


def test_an_inactive_reviewer_is_answered_as_an_unknown_user(api, requester, reviewer, prod_ssh, web1):
    reviewer.is_active = False
    reviewer.save()
    body = {"resources": ["node/web-1"], "reason": "INC-1", "suggested_reviewers": ["bob"]}
    client = api(requester)

    inactive = client.post(REQUESTS, body)
    reviewer.delete()
    unknown = client.post(REQUESTS, body)

    assert answer(inactive) == answer(unknown)
    assert inactive.json() == {"suggested_reviewers": ["not an eligible reviewer of the requested roles: bob"]}


def test_a_reviewer_of_another_role_is_not_an_eligible_suggestion(api, requester, reviewer, prod_ssh, prod_db, web1):
    db_lead = make_user("dora", groups=("db-leads",))
    body = {"resources": ["node/web-1"], "reason": "INC-1"}
    client = api(requester)

    refused = client.post(REQUESTS, {**body, "suggested_reviewers": [db_lead.username]})
    accepted = client.post(REQUESTS, {**body, "suggested_reviewers": ["bob"]})

    assert refused.status_code == 400
    assert refused.json() == {"suggested_reviewers": ["not an eligible reviewer of the requested roles: dora"]}
    assert accepted.status_code == 201, accepted.content
    assert accepted.json()["suggested_reviewers"] == ["bob"]


def test_suggested_reviewers_must_review_every_role_of_the_request(api, requester, reviewer, prod_ssh, web1, db1):
    make_role("prod-db-eng", resource_kinds=["db"], requestable_by=("engineers",), reviewers=("db-leads",))
    both = make_user("erin", groups=("db-leads", "sre-leads"))
    body = {"resources": ["node/web-1", "db/orders"], "reason": "INC-1", "duration": "30m"}
    client = api(requester)

    only_one = client.post(REQUESTS, {**body, "suggested_reviewers": ["bob"]})
    every = client.post(REQUESTS, {**body, "suggested_reviewers": [both.username]})

    assert only_one.status_code == 400
    assert only_one.json()["suggested_reviewers"] == ["not an eligible reviewer of the requested roles: bob"]
    assert every.status_code == 201, every.content


def test_group_membership_alone_decides_eligibility(api, requester, prod_ssh, web1, dave):
    """The same rule as reviewing: join a reviewer group, and the suggestion is accepted."""
    body = {"resources": ["node/web-1"], "reason": "INC-1", "suggested_reviewers": ["dave"]}
    assert api(requester).post(REQUESTS, body).status_code == 400
    dave.groups.add(Group.objects.get(name="sre-leads"))
    assert api(requester).post(REQUESTS, body).status_code == 201


# --- requests -----------------------------------------------------------------------------


def test_review_of_a_hidden_request_is_answered_as_for_a_missing_one_and_still_audited(
    api, requester, dave, prod_ssh, web1
):
    from audit.models import AuditEvent
    from requests_app import services

    hidden = services.request_create(requester=requester, resources=[web1], reason="INC-1")
    url = f"{REQUESTS}{hidden.pk}/reviews/"
    client = api(dave)

    refused = client.post(url, {"decision": "approve", "reason": "looks fine"})
    AccessRequest.objects.filter(pk=hidden.pk).delete()
    missing = client.post(url, {"decision": "approve", "reason": "looks fine"})

    assert answer(refused) == answer(missing)
    assert refused.status_code == 404
    assert AuditEvent.objects.filter(action="review.refused_ineligible", target_id=str(hidden.pk)).exists()
