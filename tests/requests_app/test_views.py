"""The self-service pages: who sees what, who is refused, errors beside their field, constant queries."""

from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role
from audit.models import AuditEvent
from requests_app.models import AccessRequest, Grant
from requests_app.services import request_create, request_review
from tests.conftest import make_resource, make_role, make_user
from tests.requests_app.portal import approved_request, many_resources, pending_requests, queries_for

pytestmark = pytest.mark.django_db


def detail_url(access_request) -> str:
    return reverse("request-detail", args=[access_request.pk])


def login(client: Client, user) -> Client:
    client.force_login(user)
    return client


def text(response) -> str:
    """The page's visible text, whitespace collapsed, so assertions read like the page does."""
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.content.decode(), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def field_block(response, name: str) -> str:
    """The HTML of one form field's block: its label, widget and the errors shown beside it."""
    html = response.content.decode()
    marker = f'name="{name}"'
    at = html.index(marker)
    start = html.rindex('<div class="field', 0, at)
    end = html.index('<div class="field', at) if '<div class="field' in html[at:] else len(html)
    return html[start:end]


@pytest.fixture
def pending(requester, prod_ssh, web1, web2):
    return request_create(requester=requester, resources=[web1, web2], reason="INC-7 disk full", duration="30m")


# --- sign in, sign out, every page needs a session ----------------------------------------


PAGES = ["dashboard", "resource-search", "request-list", "request-new"]


@pytest.mark.parametrize("name", PAGES)
def test_every_page_sends_an_anonymous_visitor_to_sign_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_detail_and_cancel_need_a_session_too(client, pending):
    assert client.get(detail_url(pending))["Location"].startswith(reverse("login"))
    response = client.post(reverse("request-cancel", args=[pending.pk]))
    assert response["Location"].startswith(reverse("login"))
    pending.refresh_from_db()
    assert pending.state == AccessRequest.State.PENDING


def test_sign_in_then_sign_out_with_a_post(client, requester):
    page = client.get(reverse("login"))
    assert page.status_code == 200 and "Sign in" in text(page)
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-correct-horse"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.get(reverse("logout")).status_code == 405  # logging out is a POST, never a link
    assert client.post(reverse("logout")).status_code == 302
    assert client.get("/").status_code == 302


def test_wrong_password_is_explained_on_the_sign_in_page(client, requester):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in text(response)


# --- dashboard -------------------------------------------------------------------------


def test_dashboard_empty_states(client, outsider):
    page = text(login(client, outsider).get("/"))
    assert "You have no access right now" in page
    assert "No request of yours is waiting for review" in page
    assert "Nothing decided yet" in page


def test_dashboard_shows_my_grants_with_time_left_pending_progress_and_decisions(
    client, requester, reviewer, reviewer2, outsider, prod_ssh, web1, web2, dev1
):
    approved_request(
        requester=requester, reviewers=[reviewer, reviewer2], role=prod_ssh, resources=[web1], duration="45m"
    )
    waiting = request_create(requester=requester, resources=[web2], reason="INC-8")
    request_review(request=waiting, reviewer=reviewer, decision="approve", reason="ok")
    denied = request_create(requester=requester, resources=[web2], reason="INC-9")
    request_review(request=denied, reviewer=reviewer, decision="deny", reason="use staging")
    someone_else = make_user("eve", groups=("engineers",))
    approved_request(requester=someone_else, reviewers=[reviewer, reviewer2], role=prod_ssh, resources=[web2])

    page = text(login(client, requester).get("/"))
    assert "web-1" in page
    assert re.search(r"expires in (44|45) minutes", page)
    assert "1 of 2 approvals" in page
    assert "Denied" in page and "use staging" in page
    # Only my own grants: eve's web-2 grant is not "my access".
    grants_section = page.split("Your access now")[1].split("Waiting for review")[0]
    assert "web-2" not in grants_section


def test_dashboard_drops_a_grant_once_the_user_leaves_the_group(client, requester, reviewer, reviewer2, prod_ssh, web1):
    approved_request(requester=requester, reviewers=[reviewer, reviewer2], role=prod_ssh, resources=[web1])
    assert "web-1" in text(login(client, requester).get("/")).split("Waiting for review")[0]
    requester.groups.clear()
    grants_section = text(client.get("/")).split("Your access now")[1].split("Waiting for review")[0]
    assert "web-1" not in grants_section


def test_dashboard_countdown_is_in_the_markup_for_the_script(client, requester, reviewer, reviewer2, prod_ssh, web1):
    access_request = approved_request(
        requester=requester, reviewers=[reviewer, reviewer2], role=prod_ssh, resources=[web1]
    )
    grant = access_request.grants.get()
    html = login(client, requester).get("/").content.decode()
    assert f'data-countdown="{timezone.localtime(grant.expires_at).isoformat()}"' in html
    assert "portal.js" in html


def test_dashboard_points_reviewers_to_their_queue(client, pending, staff_reviewer):
    page = login(client, staff_reviewer).get("/")
    assert "1 request awaits your review" in text(page)
    assert reverse("admin:requests_app_accessrequest_changelist") in page.content.decode()


def test_dashboard_banner_forgets_a_request_once_i_reviewed_it(client, pending, staff_reviewer, staff_reviewer2):
    request_review(request=pending, reviewer=staff_reviewer, decision="approve", reason="fine")

    assert "your review" not in text(login(client, staff_reviewer).get("/"))
    # Still pending: the second reviewer is still asked.
    assert "1 request awaits your review" in text(login(client, staff_reviewer2).get("/"))


def test_dashboard_does_not_offer_the_queue_to_a_group_member_without_the_admin(client, pending, reviewer):
    assert "await your review" not in text(login(client, reviewer).get("/"))


# --- resource search ------------------------------------------------------------------------


def test_search_lists_only_what_i_may_request_with_the_role_and_labels(
    client, requester, prod_ssh, web1, web2, dev1, db1
):
    response = login(client, requester).get(reverse("resource-search"))
    names = [r.name for r, _ in response.context["rows"]]
    assert names == ["web-1", "web-2"]
    page = text(response)
    assert "role prod-ssh" in page
    assert "env=prod" in page and "team=web" in page
    html = response.content.decode()
    assert f'action="{reverse("request-new")}"' in html
    assert f'name="resource" value="{web1.pk}"' in html


def test_search_filters_match_the_api(client, api, requester, prod_ssh, web1, web2, db1):
    make_role("prod-db", resource_kinds=["db"], resource_labels={"env": ["*"]})
    make_resource("web-9", labels={"env": "prod", "team": "api"}, description="the web frontend")
    login(client, requester)
    for params in [
        {"kind": "node"},
        {"kind": "db"},
        {"label": "team=web"},
        {"label": "env=prod,team=api"},
        {"search": "web"},
        {"search": "frontend", "kind": "node"},
    ]:
        page = client.get(reverse("resource-search"), params)
        from_page = {r.pk for r, _ in page.context["rows"]}
        from_api = {r["id"] for r in api(requester).get("/api/v1/resources/", params).json()["results"]}
        assert from_page == from_api, params
        assert from_page, params


def test_search_says_choose_a_role_when_several_fit(client, requester, prod_ssh, web_ssh, web1):
    page = text(login(client, requester).get(reverse("resource-search")))
    assert "choose a role: prod-ssh, web-ssh" in page


def test_search_empty_states(client, requester, outsider, prod_ssh, web1):
    assert "You may not request any role yet" in text(login(client, outsider).get(reverse("resource-search")))
    page = text(login(client, requester).get(reverse("resource-search"), {"search": "nothing-like-this"}))
    assert "No resource you may request matches these filters" in page


def test_search_bad_label_is_explained(client, requester, prod_ssh, web1):
    response = login(client, requester).get(reverse("resource-search"), {"label": "=prod"})
    assert response.status_code == 400
    assert "is not a label selector; use key=value" in text(response)


def test_search_is_paginated_and_keeps_the_filters(client, requester, prod_ssh):
    many_resources(30, prefix="node")
    login(client, requester)
    first = client.get(reverse("resource-search"), {"kind": "node"})
    assert len(first.context["rows"]) == 25
    assert "30 resources" in text(first)
    next_query = first.context["results"].next_query
    assert "kind=node" in next_query and "cursor=" in next_query
    assert f'href="?{next_query.replace("&", "&amp;")}"' in first.content.decode()
    second = client.get(f"{reverse('resource-search')}?{next_query}")
    assert [r.name for r, _ in second.context["rows"]] == [f"node-{i:03d}" for i in range(25, 30)]
    assert second.context["results"].next_query is None
    back = client.get(f"{reverse('resource-search')}?{second.context['results'].previous_query}")
    assert [r.name for r, _ in back.context["rows"]] == [f"node-{i:03d}" for i in range(25)]


def test_search_says_more_than_the_cap_instead_of_counting_everything(client, requester, prod_ssh, monkeypatch):
    monkeypatch.setattr("inventory.pagination.COUNT_CAP", 20)
    many_resources(30, prefix="node")
    response = login(client, requester).get(reverse("resource-search"))
    assert len(response.context["rows"]) == 25
    assert "More than 20 resources" in text(response)


def test_search_bad_cursor_is_explained(client, requester, prod_ssh, web1):
    response = login(client, requester).get(reverse("resource-search"), {"cursor": "garbage!"})
    assert response.status_code == 400
    assert "Cursor: is not a cursor" in text(response)


def test_search_queries_do_not_grow_with_resources(client, requester, prod_ssh, web_ssh):
    login(client, requester)
    many_resources(10, prefix="a", labels={"env": "prod", "team": "web"})
    small, response = queries_for(client, reverse("resource-search"), {"label": "env=prod"})
    assert response.context["results"].count == 10
    many_resources(290, prefix="b", labels={"env": "prod", "team": "web"})
    large, response = queries_for(client, reverse("resource-search"), {"label": "env=prod"})
    assert response.context["results"].count == 300
    deeper, _ = queries_for(client, f"{reverse('resource-search')}?{response.context['results'].next_query}", {})
    assert small == large == deeper, (small, large, deeper)


# --- the request form ------------------------------------------------------------------------


def new_url(**params) -> str:
    query = "&".join(
        f"{key}={value}"
        for key, values in params.items()
        for value in (values if isinstance(values, list) else [values])
    )
    return f"{reverse('request-new')}?{query}"


def test_form_shows_resources_role_thresholds_reviewers_and_bounded_durations(
    client, requester, reviewer, reviewer2, outsider, prod_ssh, web1, web2
):
    response = login(client, requester).get(new_url(resource=[web1.pk, web2.pk]))
    assert response.status_code == 200
    page = text(response)
    assert "2 resources" in page and "web-1" in page and "web-2" in page
    assert "role prod-ssh" in page
    assert "Needs 2 approvals" in page
    assert "bob" in page and "carol" in page and "mallory" not in page
    assert "Reason (required)" in page and "link the ticket" in page
    form = response.context["form"]
    assert [label for _, label in form.fields["duration"].choices] == ["15 min", "30 min", "1 hour"]
    assert form.fields["duration"].initial == "3600"
    assert set(dict(form.fields["suggested_reviewers"].choices)) == {"bob", "carol"}  # never alice herself
    assert "roles" not in form.fields  # one role fits: nothing to choose


def test_form_duration_choices_stop_at_an_odd_cap(client, requester, web1):
    make_role("odd", max_duration=timedelta(minutes=90))
    form = login(client, requester).get(new_url(resource=web1.pk)).context["form"]
    assert [label for _, label in form.fields["duration"].choices] == ["15 min", "30 min", "1 hour", "1 hour 30 min"]


def test_submitting_creates_the_request_through_the_service(client, requester, reviewer, prod_ssh, web1, web2):
    response = login(client, requester).post(
        new_url(resource=[web1.pk, web2.pk]),
        {"reason": "INC-4211", "duration": "1800", "suggested_reviewers": ["bob"]},
    )
    access_request = AccessRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == detail_url(access_request)
    assert access_request.requester == requester
    assert list(access_request.roles.all()) == [prod_ssh]
    assert set(access_request.resources.all()) == {web1, web2}
    assert access_request.duration == timedelta(minutes=30)
    assert list(access_request.suggested_reviewers.all()) == [reviewer]
    assert AuditEvent.objects.filter(action="request.created", target_id=str(access_request.pk)).exists()
    assert "Request sent" in text(client.get(response["Location"]))


def test_rule_refusal_shows_beside_the_reason_and_creates_nothing(client, requester, prod_ssh, web1):
    response = login(client, requester).post(new_url(resource=web1.pk), {"reason": "  ", "duration": "1800"})
    assert response.status_code == 400
    assert "a reason is required by role prod-ssh (link the ticket)" in field_block(response, "reason")
    assert "Nothing was created" in text(response)
    assert not AccessRequest.objects.exists()


def test_start_time_in_the_past_is_refused_beside_the_start_field(client, requester, prod_ssh, web1):
    past = (timezone.now() - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    response = login(client, requester).post(
        new_url(resource=web1.pk), {"reason": "INC-1", "duration": "900", "start_time": past}
    )
    assert response.status_code == 400
    assert "is in the past" in field_block(response, "start_time")
    assert not AccessRequest.objects.exists()


def test_start_time_ahead_is_kept(client, requester, prod_ssh, web1):
    start = (timezone.now() + timedelta(hours=3)).replace(second=0, microsecond=0)
    login(client, requester).post(
        new_url(resource=web1.pk),
        {"reason": "INC-1", "duration": "900", "start_time": timezone.localtime(start).strftime("%Y-%m-%dT%H:%M")},
    )
    assert AccessRequest.objects.get().start_time == start


def test_a_duration_not_offered_is_a_form_error(client, requester, prod_ssh, web1):
    response = login(client, requester).post(new_url(resource=web1.pk), {"reason": "INC-1", "duration": "7200"})
    assert response.status_code == 400
    assert "Select a valid choice" in field_block(response, "duration")
    assert not AccessRequest.objects.exists()


def test_several_fitting_roles_ask_for_a_choice_and_the_service_names_the_problem(
    client, requester, prod_ssh, web_ssh, web1
):
    login(client, requester)
    response = client.get(new_url(resource=web1.pk))
    assert set(dict(response.context["form"].fields["roles"].choices)) == {"prod-ssh", "web-ssh"}
    assert "choose: prod-ssh or web-ssh" in text(response)

    # No choice: the service refuses (it never guesses between privileges), beside the roles field.
    response = client.post(new_url(resource=web1.pk), {"reason": "INC-1", "duration": "900"})
    assert response.status_code == 400
    assert "several roles you may request grant access to it (prod-ssh, web-ssh)" in field_block(response, "roles")

    # The duration list goes to prod-ssh's hour; web-ssh caps at 30 minutes and the service says so beside duration.
    response = client.post(new_url(resource=web1.pk), {"roles": ["web-ssh"], "reason": "INC-1", "duration": "3600"})
    assert response.status_code == 400
    assert "1h is longer than the maximum of 30m (role web-ssh)" in field_block(response, "duration")
    assert not AccessRequest.objects.exists()

    response = client.post(new_url(resource=web1.pk), {"roles": ["web-ssh"], "reason": "INC-1", "duration": "900"})
    assert response.status_code == 302
    assert list(AccessRequest.objects.get().roles.all()) == [web_ssh]


def test_a_role_used_anyway_is_no_choice_and_covers_the_overlap(client, requester, reviewer):
    admin_role = make_role("db-admin", resource_kinds=["db"], resource_labels={"env": ["*"]})
    make_role("prod-db", resource_kinds=["db"], resource_labels={"env": ["prod"]})
    orders = make_resource("orders", kind="db", labels={"env": "prod"})
    staging = make_resource("orders-staging", kind="db", labels={"env": "staging"})
    url = new_url(resource=[orders.pk, staging.pk])
    response = login(client, requester).get(url)
    roles = response.context["form"].fields["roles"]
    assert list(dict(roles.choices)) == ["prod-db"]  # db-admin is the only role for orders-staging
    assert roles.label == "Other roles (optional)"
    assert "db-admin reaches every resource here" in text(response)

    client.post(url, {"reason": "migration 42", "duration": "900"})
    assert list(AccessRequest.objects.get().roles.all()) == [admin_role]


def test_a_role_request_asks_for_the_whole_role(client, requester, reviewer, prod_ssh):
    login(client, requester)
    start = text(client.get(reverse("request-new")))
    assert "prod-ssh" in start and "Request this role" in start
    response = client.get(new_url(role="prod-ssh"))
    assert "Role prod-ssh" in text(response) and "Needs 2 approvals" in text(response)
    response = client.post(new_url(role="prod-ssh"), {"reason": "INC-2", "duration": "900"})
    access_request = AccessRequest.objects.get()
    assert response["Location"] == detail_url(access_request)
    assert list(access_request.roles.all()) == [prod_ssh] and not access_request.resources.exists()


def test_role_list_empty_state(client, outsider):
    assert "You may not request any role yet" in text(login(client, outsider).get(reverse("request-new")))


@pytest.mark.parametrize(
    ("who", "query", "message"),
    [
        # What the user may not see is answered as what does not exist.
        ("outsider", "resource=web", "no such resource: {web1.pk}"),
        ("requester", "resource=db", "no such resource: db/orders"),
        ("requester", "resource=missing", "no such resource: node/nope"),
        ("requester", "role=ghost", "no such role: ghost"),
        ("outsider", "role=prod-ssh", "no such role: prod-ssh"),
    ],
)
def test_what_cannot_be_requested_is_explained_and_nothing_is_created(
    client, requester, outsider, prod_ssh, web1, db1, who, query, message
):
    refs = {
        "resource=web": f"resource={web1.pk}",
        "resource=db": "resource=db/orders",
        "resource=missing": "resource=node/nope",
    }
    url = f"{reverse('request-new')}?{refs.get(query, query)}"
    login(client, {"outsider": outsider, "requester": requester}[who])
    for response in (client.get(url), client.post(url, {"reason": "x", "duration": "900"})):
        assert response.status_code == 400
        assert message.format(web1=web1) in text(response)
    assert not AccessRequest.objects.exists()


def test_auto_approved_role_says_so_and_grants_at_once(client, requester, self_service, dev1):
    response = login(client, requester).get(new_url(resource=dev1.pk))
    assert "Approved automatically when you send it" in text(response)
    response = client.post(new_url(resource=dev1.pk), {"reason": "", "duration": "3600"}, follow=True)
    assert "Approved automatically by the role's policy" in text(response)
    assert Grant.objects.get().resource == dev1


def test_suggesting_someone_not_offered_is_refused(client, requester, reviewer, outsider, prod_ssh, web1):
    response = login(client, requester).post(
        new_url(resource=web1.pk), {"reason": "INC-1", "duration": "900", "suggested_reviewers": ["mallory"]}
    )
    assert response.status_code == 400
    assert "Select a valid choice" in field_block(response, "suggested_reviewers")
    assert not AccessRequest.objects.exists()


# --- my requests and the detail page --------------------------------------------------------------


def test_my_requests_lists_only_mine_and_filters_by_state(client, requester, reviewer, prod_ssh, web1, web2):
    mine = request_create(requester=requester, resources=[web1], reason="INC-1")
    cancelled = request_create(requester=requester, resources=[web2], reason="INC-2")
    login(client, requester).post(reverse("request-cancel", args=[cancelled.pk]))
    other = request_create(requester=make_user("eve", groups=("engineers",)), resources=[web1], reason="INC-3")
    login(client, requester)

    listed = {r.pk for r in client.get(reverse("request-list")).context["page"].object_list}
    assert listed == {mine.pk, cancelled.pk} and other.pk not in listed
    pending_only = client.get(reverse("request-list"), {"state": "pending"}).context["page"].object_list
    assert [r.pk for r in pending_only] == [mine.pk]
    assert "You have no approved requests" in text(client.get(reverse("request-list"), {"state": "approved"}))


def test_my_requests_empty_state(client, outsider):
    assert "You have not asked for access yet" in text(login(client, outsider).get(reverse("request-list")))


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("requester", 200),
        ("reviewer", 200),
        ("auditor", 200),
        ("staff", 404),
        ("revoker", 404),
        ("outsider", 404),
        ("peer", 404),
    ],
)
def test_detail_is_for_the_requester_eligible_reviewers_and_auditors(
    client, pending, requester, reviewer, auditor, staff, revoker, outsider, who, status
):
    users = {
        "requester": requester,
        "reviewer": reviewer,
        "auditor": auditor,
        "staff": staff,
        "revoker": revoker,
        "outsider": outsider,
    }
    users["peer"] = make_user("eve", groups=("engineers",))  # may request the same role, not review it
    assert login(client, users[who]).get(detail_url(pending)).status_code == status


def test_unknown_request_is_404(client, requester):
    assert login(client, requester).get(reverse("request-detail", args=[uuid.uuid4()])).status_code == 404


def test_detail_shows_progress_each_review_and_the_grants(client, requester, reviewer, reviewer2, pending):
    login(client, requester)
    request_review(request=pending, reviewer=reviewer, decision="approve", reason="looks right")
    page = text(client.get(detail_url(pending)))
    assert "1 of 2 approvals" in page
    assert "looks right" in page and "approved" in page
    assert "Nothing yet: access is granted once the request has 2 approvals" in page
    assert "Cancel request" in page

    request_review(request=pending, reviewer=reviewer2, decision="approve", reason="ok")
    response = client.get(detail_url(pending))
    page = text(response)
    assert "2 of 2 approvals" in page and "Approved" in page
    assert page.count("active") >= 2 and "node/web-1" in page and "node/web-2" in page
    assert "Cancel request" not in page
    for grant in pending.grants.all():
        assert timezone.localtime(grant.expires_at).isoformat() in response.content.decode()


def test_detail_tells_the_owner_how_to_connect_to_an_active_ssh_grant(
    client, requester, reviewer, reviewer2, prod_ssh, web1, db1
):
    make_role("prod-db", resource_kinds=["db"], resource_labels={"env": ["prod"]}, logins=["postgres"], approvals=1)
    ssh = approved_request(requester=requester, reviewers=[reviewer, reviewer2], role=prod_ssh, resources=[web1])
    grant = ssh.grants.get()
    page = text(login(client, requester).get(detail_url(ssh)))
    assert "jit ssh ubuntu@web-1" in page
    assert f"POST /api/v1/grants/{grant.pk}/certificate/" in page

    # Not to a reviewer looking at it, not for a database, not once revoked.
    assert "jit ssh" not in text(login(client, reviewer).get(detail_url(ssh)))
    db_request = approved_request(
        requester=requester, reviewers=[reviewer], role=Role.objects.get(name="prod-db"), resources=[db1]
    )
    assert "How to connect" not in text(login(client, requester).get(detail_url(db_request)))
    Grant.objects.filter(pk=grant.pk).update(revoked_at=timezone.now())
    assert "jit ssh" not in text(client.get(detail_url(ssh)))


def test_detail_offers_no_way_to_connect_once_the_access_check_stops_honouring_the_grant(
    client, requester, reviewer, reviewer2, prod_ssh, web1
):
    """The panel follows ``GrantQuerySet.honoured``, not only the time window."""
    ssh = approved_request(requester=requester, reviewers=[reviewer, reviewer2], role=prod_ssh, resources=[web1])
    login(client, requester)
    assert "jit ssh ubuntu@web-1" in text(client.get(detail_url(ssh)))

    # Relabelled out of the role: the grant is still in its window but no longer honoured.
    make_resource("web-1", labels={"env": "staging", "team": "web"}, address=web1.address)
    assert "jit ssh" not in text(client.get(detail_url(ssh)))
    make_resource("web-1", labels={"env": "prod", "team": "web"}, address=web1.address)
    assert "jit ssh ubuntu@web-1" in text(client.get(detail_url(ssh)))

    # Out of every group that may request the role.
    requester.groups.clear()
    assert "jit ssh" not in text(client.get(detail_url(ssh)))


def test_detail_offers_staff_reviewers_the_queue(client, pending, staff_reviewer):
    html = login(client, staff_reviewer).get(detail_url(pending)).content.decode()
    assert reverse("admin:requests_app_accessrequest_change", args=[pending.pk]) in html


# --- cancel -------------------------------------------------------------------------------


def test_requester_cancels_a_pending_request(client, requester, pending):
    response = login(client, requester).post(reverse("request-cancel", args=[pending.pk]), follow=True)
    assert "Request cancelled" in text(response)
    pending.refresh_from_db()
    assert pending.state == AccessRequest.State.CANCELLED
    assert AuditEvent.objects.filter(action="request.cancelled", actor_username="alice").exists()


def test_cancel_is_a_post(client, requester, pending):
    assert login(client, requester).get(reverse("request-cancel", args=[pending.pk])).status_code == 405
    pending.refresh_from_db()
    assert pending.state == AccessRequest.State.PENDING


def test_cancel_needs_the_csrf_token(requester, pending):
    client = Client(enforce_csrf_checks=True)
    client.force_login(requester)
    assert client.post(reverse("request-cancel", args=[pending.pk])).status_code == 403
    pending.refresh_from_db()
    assert pending.state == AccessRequest.State.PENDING


def test_a_reviewer_cannot_cancel_and_is_told_why(client, reviewer, pending):
    response = login(client, reviewer).post(reverse("request-cancel", args=[pending.pk]), follow=True)
    assert "Not cancelled: only the requester can cancel a request" in text(response)
    pending.refresh_from_db()
    assert pending.state == AccessRequest.State.PENDING


def test_an_outsider_gets_404_and_a_decided_request_cannot_be_cancelled(client, requester, outsider, pending):
    assert login(client, outsider).post(reverse("request-cancel", args=[pending.pk])).status_code == 404
    login(client, requester).post(reverse("request-cancel", args=[pending.pk]))
    response = client.post(reverse("request-cancel", args=[pending.pk]), follow=True)
    assert "the request is cancelled; only pending requests can be cancelled" in text(response)


# --- constant queries ----------------------------------------------------------------------------


def test_dashboard_queries_do_not_grow_with_grants_and_requests(client, requester, prod_ssh, self_service):
    login(client, requester)
    client.get("/")
    dev = many_resources(300, prefix="dev", labels={"env": "dev"})
    prod = many_resources(300, prefix="prod", labels={"env": "prod"})

    def grow(start: int, end: int) -> None:
        for i in range(start, end):
            request_create(requester=requester, resources=[dev[i]], roles=[self_service], reason="x")
        pending_requests(end - start, requester=requester, role=prod_ssh, resources=prod[start:end])

    grow(0, 10)
    small, response = queries_for(client, "/")
    assert len(response.context["board"].grants) == 10 and len(response.context["board"].pending) == 10
    grow(10, 300)
    large, response = queries_for(client, "/")
    assert len(response.context["board"].grants) == 300 and response.context["board"].more_pending
    assert small == large, (small, large)


def test_my_requests_queries_do_not_grow(client, requester, prod_ssh):
    login(client, requester)
    hosts = many_resources(5, prefix="h")
    pending_requests(10, requester=requester, role=prod_ssh, resources=hosts)
    small, _ = queries_for(client, reverse("request-list"))
    pending_requests(290, requester=requester, role=prod_ssh, resources=hosts)
    large, response = queries_for(client, reverse("request-list"))
    assert response.context["page"].paginator.count == 300
    assert small == large


# --- a request past its time to live, a denial's reason ----------------------------------------


def past_its_ttl(access_request: AccessRequest) -> AccessRequest:
    now = timezone.now()
    AccessRequest.objects.filter(pk=access_request.pk).update(
        created_at=now - timedelta(days=2), pending_expires_at=now - timedelta(minutes=5)
    )
    access_request.refresh_from_db()
    return access_request


def test_a_request_past_its_ttl_reads_expired_on_every_page_before_the_sweep(client, requester, pending):
    past_its_ttl(pending)
    login(client, requester)

    detail = client.get(detail_url(pending))
    assert "Expired" in text(detail) and "pending time to live passed" in text(detail)
    assert not detail.context["can_cancel"]
    assert "Cancel request" not in text(detail)
    dashboard = client.get(reverse("dashboard"))
    assert list(dashboard.context["board"].pending) == []
    assert [r.pk for r in dashboard.context["board"].recent] == [pending.pk]
    assert not client.get(reverse("request-list"), {"state": "pending"}).context["page"].object_list
    expired = client.get(reverse("request-list"), {"state": "expired"}).context["page"].object_list
    assert [r.pk for r in expired] == [pending.pk]


def test_cancelling_from_the_page_after_the_ttl_records_the_expiry(client, requester, pending):
    past_its_ttl(pending)

    response = login(client, requester).post(reverse("request-cancel", args=[pending.pk]), follow=True)

    assert "Not cancelled: the request expired at" in text(response)
    pending.refresh_from_db()
    assert pending.state == AccessRequest.State.EXPIRED
    assert AuditEvent.objects.filter(action="request.expired", target_id=str(pending.pk)).exists()


def test_the_requester_sees_why_the_request_was_denied(client, requester, reviewer, pending):
    request_review(request=pending, reviewer=reviewer, decision="deny", reason="use the read replica instead")
    login(client, requester)

    detail = text(client.get(detail_url(pending)))
    assert "Denied" in detail and "use the read replica instead" in detail
    dashboard = text(client.get(reverse("dashboard")))
    assert "use the read replica instead" in dashboard
