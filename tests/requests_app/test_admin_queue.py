"""The reviewers' queue in the admin: what a reviewer sees, approve / deny / revoke through the services."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, Role, User
from audit.models import AuditEvent
from inventory.models import Resource
from jitportal.errors import PermissionRefused
from requests_app.models import AccessRequest, Grant, Review
from requests_app.services import request_create, request_review
from tests.conftest import give_capabilities, make_role, make_user
from tests.requests_app.portal import (
    approved_request,
    grant_review_permission,
    many_resources,
    pending_requests,
    queries_for,
)

pytestmark = pytest.mark.django_db

QUEUE = reverse("admin:requests_app_accessrequest_changelist")
REVIEW = reverse("admin:requests_app_accessrequest_review")
GRANTS = reverse("admin:requests_app_grant_changelist")
REVOKE = reverse("admin:requests_app_grant_revoke")


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def text(response) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def shown(response) -> set:
    return {obj.pk for obj in response.context["cl"].result_list}


def act(client, action: str, requests, **params):
    """Pick rows on the changelist and run an action, as the admin's form does."""
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(r.pk) for r in requests], "index": "0"}
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.post(f"{QUEUE}?{query}" if query else QUEUE, data)


def confirm(client, decision: str, requests, reason: str = "checked", **extra):
    return client.post(
        REVIEW, {"decision": decision, "ids": [str(r.pk) for r in requests], "reason": reason, **extra}, follow=True
    )


@pytest.fixture
def engineer_reviewer(reviewer):
    """bob, also an engineer: he may request prod-ssh himself, and review everyone else's."""
    reviewer.groups.add(Group.objects.get_or_create(name="engineers")[0])
    return grant_review_permission(reviewer)


@pytest.fixture
def queue(requester, prod_ssh, web1, web2, db1):
    """Pending prod-ssh requests bob may review, one he may not (prod-db: dba only), one decided."""
    db_role = make_role("prod-db", resource_kinds=["db"], reviewers=("dba",))
    first = request_create(requester=requester, resources=[web1], reason="INC-1 first")
    second = request_create(requester=requester, resources=[web2], reason="INC-2 second")
    other_role = request_create(requester=requester, resources=[db1], roles=[db_role], reason="INC-3 db")
    decided = request_create(requester=requester, resources=[web1, web2], reason="INC-4 decided")
    request_review(request=decided, reviewer=make_user("dan", groups=("sre-leads",)), decision="deny", reason="no")
    return {"first": first, "second": second, "other_role": other_role, "decided": decided}


# --- who sees what ---------------------------------------------------------------------------


def test_a_reviewer_sees_only_the_queue(client, staff_reviewer, prod_ssh):
    assert not staff_reviewer.is_staff
    client.force_login(staff_reviewer)
    response = client.get(reverse("admin:index"))
    listed = {m["object_name"] for app in response.context["app_list"] for m in app["models"]}
    assert listed == {"AccessRequest"}
    for model in (Resource, Role, User, ApiToken, Grant, Review, AuditEvent):
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert client.get(url).status_code == 403, model


def test_a_reviewer_without_the_staff_flag_opens_the_queue(client, reviewer, queue):
    client.force_login(reviewer)
    response = client.get(QUEUE)
    assert response.status_code == 200
    assert shown(response) == {queue["first"].pk, queue["second"].pk}
    assert client.get(f"{REVIEW}?decision=approve&ids={queue['first'].pk}").status_code == 200


def test_someone_in_no_reviewer_group_cannot_open_the_admin(client, requester, queue):
    client.force_login(requester)
    response = client.get(QUEUE)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert client.get(f"{REVIEW}?decision=approve").status_code == 302


def test_queue_opens_on_pending_requests_awaiting_my_review(client, staff_reviewer, queue):
    client.force_login(staff_reviewer)
    response = client.get(QUEUE)
    assert shown(response) == {queue["first"].pk, queue["second"].pk}
    page = text(response)
    assert "Access requests awaiting my review" in page
    assert "INC-1 first" in page and "node/web-1" in page and "0 of 2" in page
    assert "in 23 hours" in page  # pending expiry: prod-ssh waits 24 hours


def test_queue_never_holds_my_own_request(client, engineer_reviewer, queue, prod_ssh, web1):
    mine = request_create(requester=engineer_reviewer, resources=[web1], reason="my own")
    client.force_login(engineer_reviewer)
    assert mine.pk not in shown(client.get(QUEUE))
    assert mine.pk in shown(client.get(QUEUE, {"queue": "mine"}))


def test_queue_hides_requests_past_their_pending_ttl(client, staff_reviewer, queue):
    past = timezone.now() - timedelta(hours=1)
    AccessRequest.objects.filter(pk=queue["first"].pk).update(
        created_at=past, pending_expires_at=past + timedelta(minutes=59)
    )
    client.force_login(staff_reviewer)
    assert shown(client.get(QUEUE)) == {queue["second"].pk}


def test_queue_drops_a_request_once_i_reviewed_it_but_others_still_see_it(
    client, staff_reviewer, staff_reviewer2, queue
):
    request_review(request=queue["first"], reviewer=staff_reviewer, decision="approve", reason="fine")
    client.force_login(staff_reviewer)

    assert shown(client.get(QUEUE)) == {queue["second"].pk}
    assert shown(client.get(QUEUE, {"queue": "awaiting"})) == {queue["second"].pk}
    # Still pending (1 of 2), so it stays among those I may review, and in carol's queue.
    assert queue["first"].pk in shown(client.get(QUEUE, {"queue": "reviewable"}))
    client.force_login(staff_reviewer2)
    assert shown(client.get(QUEUE)) == {queue["first"].pk, queue["second"].pk}


def test_all_requests_filters_and_search(client, staff_reviewer, queue, prod_ssh):
    client.force_login(staff_reviewer)
    # "All" is all a reviewer may see: the prod-db request (dba reviews it) is not among them.
    assert shown(client.get(QUEUE, {"queue": "all"})) == {queue["first"].pk, queue["second"].pk, queue["decided"].pk}
    assert shown(client.get(QUEUE, {"queue": "all", "state__exact": "denied"})) == {queue["decided"].pk}
    assert shown(client.get(QUEUE, {"queue": "all", "roles__id__exact": prod_ssh.pk})) == {
        queue["first"].pk,
        queue["second"].pk,
        queue["decided"].pk,
    }
    assert shown(client.get(QUEUE, {"queue": "all", "q": "web-2"})) == {queue["second"].pk, queue["decided"].pk}
    assert shown(client.get(QUEUE, {"queue": "all", "q": "orders"})) == set()  # resource name, not visible
    assert shown(client.get(QUEUE, {"queue": "all", "q": "second"})) == {queue["second"].pk}  # reason
    assert len(shown(client.get(QUEUE, {"queue": "all", "q": "alice"}))) == 3  # requester
    assert shown(client.get(QUEUE, {"queue": "reviewable"})) == {
        queue["first"].pk,
        queue["second"].pk,
        queue["decided"].pk,
    }


def test_an_auditor_reads_everything_but_cannot_review(client, auditor, queue):
    client.force_login(auditor)
    response = client.get(QUEUE)
    assert shown(response) == {r.pk for r in queue.values()}
    assert "approve_selected" not in response.content.decode()
    assert client.get(f"{REVIEW}?decision=approve&ids={queue['first'].pk}").status_code == 403
    response = act(client, "approve_selected", [queue["first"]])
    assert not Review.objects.filter(request=queue["first"]).exists()
    page = client.get(change_url(queue["first"]))
    assert page.status_code == 200 and "Approve…" not in page.content.decode()


def test_history_stays_read_only_for_reviewers(client, staff_reviewer, queue):
    client.force_login(staff_reviewer)
    obj = queue["first"]
    assert client.post(change_url(obj), {}).status_code == 403
    assert client.get(reverse("admin:requests_app_accessrequest_add")).status_code == 403
    assert (
        client.post(reverse("admin:requests_app_accessrequest_delete", args=[obj.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert AccessRequest.objects.filter(pk=obj.pk, state="pending").exists()


# --- approve and deny -------------------------------------------------------------------------


def test_approve_action_asks_for_a_reason_on_an_intermediate_page(client, staff_reviewer, queue):
    client.force_login(staff_reviewer)
    response = act(client, "approve_selected", [queue["first"]])
    assert response.status_code == 200
    assert response.templates[0].name == "admin/requests_app/review_confirm.html"
    page = text(response)
    assert "Approve 1 access request" in page and "INC-1 first" in page and "Review reason" in page
    assert not Review.objects.filter(reviewer=staff_reviewer).exists()  # nothing happens before the confirmation
    assert f'value="{QUEUE}"' in response.content.decode()  # back to the list afterwards

    response = confirm(client, "approve", [queue["first"]], reason="matches INC-1", next=QUEUE)
    assert response.redirect_chain[-1][0] == QUEUE
    review = Review.objects.get(reviewer=staff_reviewer)
    assert (review.request_id, review.reviewer, review.decision, review.reason) == (
        queue["first"].pk,
        staff_reviewer,
        "approve",
        "matches INC-1",
    )
    assert any("still pending, 1 of 2 approvals" in m for m in messages_of(response))
    assert AuditEvent.objects.filter(action="review.created", actor_username="bob").count() == 1


def test_second_reviewer_completes_the_threshold(client, staff_reviewer, staff_reviewer2, queue):
    client.force_login(staff_reviewer)
    confirm(client, "approve", [queue["first"]])
    client.force_login(staff_reviewer2)
    response = confirm(client, "approve", [queue["first"]])
    assert any("now approved" in m for m in messages_of(response))
    queue["first"].refresh_from_db()
    assert queue["first"].state == AccessRequest.State.APPROVED
    assert queue["first"].grants.count() == 1


def test_bulk_review_reports_each_refusal_and_the_rest_proceed(client, engineer_reviewer, queue, web1, web2):
    own = request_create(requester=engineer_reviewer, resources=[web2], reason="bob's own")
    picked = [queue["first"], own, queue["other_role"], queue["second"], queue["decided"]]
    client.force_login(engineer_reviewer)
    page = act(client, "deny_selected", picked, queue="all")
    assert page.status_code == 200
    notes = text(page)
    assert "your own request: will be refused" in notes
    # bob may not review the prod-db request, so for him it does not exist.
    assert "you are not a reviewer for every role" not in notes
    assert "it is denied: will be refused" in notes

    response = confirm(client, "deny", picked, reason="not during the freeze")
    errors = [m for m in messages_of(response) if "request" in m and ":" in m and "Denied" not in m]
    assert errors == [
        f"bob's request {str(own.pk)[:8]}: you cannot review your own request.",
        f"{queue['other_role'].pk}: no such request.",
        f"alice's request {str(queue['decided'].pk)[:8]}: "
        "the request is denied; only pending requests can be reviewed.",
    ]
    for key in ("first", "second"):
        queue[key].refresh_from_db()
        assert queue[key].state == AccessRequest.State.DENIED
    own.refresh_from_db()
    queue["other_role"].refresh_from_db()
    assert own.state == queue["other_role"].state == AccessRequest.State.PENDING
    assert Review.objects.filter(reviewer=engineer_reviewer).count() == 2
    # Refusals are audited by the service, as from the API.
    assert AuditEvent.objects.filter(action="review.refused_self", actor_username="bob").count() == 1
    assert not AuditEvent.objects.filter(action="review.refused_ineligible", actor_username="bob").exists()


def test_select_across_reviews_every_row_of_the_filtered_list(client, staff_reviewer, queue):
    client.force_login(staff_reviewer)
    data = {
        "action": "approve_selected",
        helpers.ACTION_CHECKBOX_NAME: [str(queue["first"].pk)],
        "select_across": "1",
        "index": "0",
    }
    page = client.post(QUEUE, data)
    assert {str(r.pk) for r in (queue["first"], queue["second"])} == set(page.context["ids"])


def test_a_reason_too_long_is_shown_beside_the_field_and_nothing_is_reviewed(client, staff_reviewer, queue):
    client.force_login(staff_reviewer)
    response = client.post(
        REVIEW, {"decision": "approve", "ids": [str(queue["first"].pk), str(queue["second"].pk)], "reason": "x" * 5000}
    )
    assert response.status_code == 400
    assert response.context["form"].errors["reason"] == ["must be at most 4096 characters"]
    assert "must be at most 4096 characters" in text(response)
    assert not Review.objects.filter(reviewer=staff_reviewer).exists()


def test_review_page_refuses_an_unknown_decision_and_reports_unknown_ids(client, staff_reviewer, queue):
    client.force_login(staff_reviewer)
    assert client.get(f"{REVIEW}?decision=maybe&ids={queue['first'].pk}").status_code == 400
    response = client.post(
        REVIEW, {"decision": "approve", "ids": ["not-a-uuid", str(queue["first"].pk)], "reason": ""}, follow=True
    )
    assert "not-a-uuid: no such request." in messages_of(response)
    assert Review.objects.filter(request=queue["first"]).exists()


def test_change_page_is_read_only_with_reviews_inline_and_approve_deny_buttons(
    client, staff_reviewer, reviewer2, queue
):
    request_review(request=queue["first"], reviewer=reviewer2, decision="approve", reason="carol says yes")
    client.force_login(staff_reviewer)
    response = client.get(change_url(queue["first"]))
    content = response.content.decode()
    assert not response.context["has_change_permission"]
    assert "carol says yes" in content  # the review, inline
    approve = f"{REVIEW}?decision=approve&amp;ids={queue['first'].pk}"
    assert approve in content and f"{REVIEW}?decision=deny&amp;ids={queue['first'].pk}" in content

    page = client.get(html.unescape(approve))
    assert page.status_code == 200 and "Approve 1 access request" in text(page)
    response = confirm(client, "approve", [queue["first"]], reason="second look")
    queue["first"].refresh_from_db()
    assert queue["first"].state == AccessRequest.State.APPROVED


@pytest.mark.parametrize(
    ("case", "note"),
    [
        ("own", "This is your own request; another reviewer decides on it."),
        ("other_role", "You are not a reviewer for every role of this request."),
        ("decided", "This request is denied; only pending requests can be reviewed."),
        ("reviewed", "You have already reviewed this request."),
    ],
)
def test_change_page_says_why_it_offers_no_buttons(client, engineer_reviewer, queue, web1, case, note):
    if case == "own":
        target = request_create(requester=engineer_reviewer, resources=[web1], reason="mine")
    elif case == "reviewed":
        target = queue["first"]
        request_review(request=target, reviewer=engineer_reviewer, decision="approve")
    else:
        target = queue[case]
    if case == "other_role":
        # A reviewer sees that request at all only when also an auditor.
        engineer_reviewer = give_capabilities(engineer_reviewer, "audit")
    client.force_login(engineer_reviewer)
    content = text(client.get(change_url(target)))
    assert note in content and "Approve…" not in content


def test_bulk_confirmation_notes_say_what_the_service_will_refuse_in_one_query(client, engineer_reviewer, queue, web1):
    """The notes come from ``review_refusal`` (one query for all rows): an earlier review of one's own
    is noted as well, and an own request past its time to live is noted as one's own, as the service refuses it."""
    request_review(request=queue["second"], reviewer=engineer_reviewer, decision="approve")
    own = request_create(requester=engineer_reviewer, resources=[web1], reason="mine")
    now = timezone.now()
    AccessRequest.objects.filter(pk=own.pk).update(
        created_at=now - timedelta(days=2), pending_expires_at=now - timedelta(seconds=1)
    )
    picked = [queue["first"], queue["second"], queue["decided"], own]
    client.force_login(engineer_reviewer)
    ids = [str(r.pk) for r in picked]
    many, page = queries_for(client, REVIEW, {"decision": "approve", "ids": ids})
    notes = {obj.pk: note for _raw, obj, note in page.context["items"] if note}
    assert notes == {
        queue["second"].pk: "you have already reviewed it: will be refused",
        queue["decided"].pk: "it is denied: will be refused",
        own.pk: "your own request: will be refused",
    }
    one, _ = queries_for(client, REVIEW, {"decision": "approve", "ids": ids[:1]})
    assert many == one
    with pytest.raises(PermissionRefused, match="you cannot review your own request"):
        request_review(request=own, reviewer=engineer_reviewer, decision="approve")


# --- grants: revoke ---------------------------------------------------------------------------


@pytest.fixture
def grants(requester, reviewer, reviewer2, prod_ssh, web1, web2):
    access_request = approved_request(
        requester=requester, reviewers=[reviewer, reviewer2], role=prod_ssh, resources=[web1, web2]
    )
    return list(access_request.grants.order_by("pk"))


def test_revoke_asks_for_a_reason_then_ends_access(client, revoker, grants):
    client.force_login(revoker)
    page = client.post(
        GRANTS, {"action": "revoke_selected", helpers.ACTION_CHECKBOX_NAME: [grants[0].pk], "index": "0"}
    )
    assert page.status_code == 200 and "Revoke 1 grant" in text(page)
    assert Grant.objects.get(pk=grants[0].pk).revoked_at is None

    refused = client.post(REVOKE, {"ids": [grants[0].pk], "reason": ""})
    assert refused.status_code == 400
    assert refused.context["form"].errors["reason"] == ["a reason is required to revoke access"]
    assert Grant.objects.get(pk=grants[0].pk).revoked_at is None

    response = client.post(REVOKE, {"ids": [grants[0].pk], "reason": "incident closed"}, follow=True)
    revoked = Grant.objects.get(pk=grants[0].pk)
    assert revoked.revoked_by == revoker and revoked.revoke_reason == "incident closed"
    assert Grant.objects.get(pk=grants[1].pk).revoked_at is None
    assert any(m.startswith("Revoked: grant") for m in messages_of(response))
    assert AuditEvent.objects.filter(action="grant.revoked", actor_username="ray").count() == 1


def test_revoking_an_ended_grant_is_reported_and_the_rest_proceed(client, revoker, grants):
    client.force_login(revoker)
    client.post(REVOKE, {"ids": [grants[0].pk], "reason": "first"})
    response = client.post(REVOKE, {"ids": [grants[0].pk, grants[1].pk, 999999], "reason": "second"}, follow=True)
    messages = messages_of(response)
    assert f"grant {grants[0].pk} (alice → node/web-1): the grant is already revoked." in messages
    assert "grant 999999: no such grant." in messages
    assert Grant.objects.get(pk=grants[1].pk).revoke_reason == "second"
    assert AccessRequest.objects.get(pk=grants[0].request_id).state == AccessRequest.State.REVOKED


def test_grant_change_page_offers_revoke_while_live(client, revoker, grants):
    client.force_login(revoker)
    assert f"{REVOKE}?ids={grants[0].pk}" in client.get(change_url(grants[0])).content.decode()
    Grant.objects.filter(pk=grants[0].pk).update(revoked_at=timezone.now())
    assert REVOKE not in client.get(change_url(grants[0])).content.decode()


def test_grant_state_filter_still_reads_the_timestamps(client, auditor, grants):
    past = timezone.now() - timedelta(hours=1)
    Grant.objects.filter(pk=grants[0].pk).update(starts_at=past, expires_at=past + timedelta(minutes=59))
    client.force_login(auditor)
    assert shown(client.get(GRANTS, {"state": "expired"})) == {grants[0].pk}
    assert shown(client.get(GRANTS, {"state": "active"})) == {grants[1].pk}


# --- the index summary --------------------------------------------------------------------------


def test_index_summary_counts_my_queue_and_its_oldest(client, staff_reviewer, queue, grants):
    AccessRequest.objects.filter(pk=queue["first"].pk).update(created_at=timezone.now() - timedelta(hours=3))
    client.force_login(staff_reviewer)
    response = client.get(reverse("admin:index"))
    summary = response.context["review_summary"]
    assert summary.awaiting == 2
    assert timedelta(hours=3) <= summary.oldest_age < timedelta(hours=3, minutes=1)
    content = response.content.decode()
    assert '<strong data-summary="awaiting">2</strong>' in content
    assert '<td data-summary="oldest">3\xa0hours</td>' in content
    # Everyone's grants are not a reviewer's business.
    assert summary.active_grants is None
    assert 'data-summary="active"' not in content


def test_index_summary_does_not_count_what_i_already_reviewed(client, staff_reviewer, queue):
    AccessRequest.objects.filter(pk=queue["second"].pk).update(created_at=timezone.now() - timedelta(hours=5))
    request_review(request=queue["second"], reviewer=staff_reviewer, decision="approve", reason="fine")
    client.force_login(staff_reviewer)

    response = client.get(reverse("admin:index"))

    summary = response.context["review_summary"]
    assert summary.awaiting == 1
    # The oldest is the oldest still waiting for me, not the one I already answered.
    assert summary.oldest_age < timedelta(hours=1)
    assert '<strong data-summary="awaiting">1</strong>' in response.content.decode()


def test_index_summary_for_an_auditor_has_no_queue(client, auditor, queue, grants):
    client.force_login(auditor)
    response = client.get(reverse("admin:index"))
    assert response.context["review_summary"].awaiting is None
    assert "Awaiting my review" not in response.content.decode()
    assert '<strong data-summary="active">2</strong>' in response.content.decode()


# --- constant queries ------------------------------------------------------------------------------


def test_queue_queries_do_not_grow_with_rows(client, staff_reviewer, requester, prod_ssh):
    client.force_login(staff_reviewer)
    hosts = many_resources(5, prefix="h")
    client.get(QUEUE)
    pending_requests(10, requester=requester, role=prod_ssh, resources=hosts)
    small, response = queries_for(client, QUEUE)
    assert response.context["cl"].result_count == 10
    pending_requests(290, requester=requester, role=prod_ssh, resources=hosts)
    large, response = queries_for(client, QUEUE)
    assert response.context["cl"].result_count == 300
    assert small == large, (small, large)


# --- a denial needs a reason; expiry read from the timestamps ---------------------------------------


def test_denying_without_a_reason_is_refused_beside_the_field(client, staff_reviewer, queue):
    client.force_login(staff_reviewer)
    page = act(client, "deny_selected", [queue["first"]])
    assert re.search(r'<textarea[^>]*name="reason"[^>]*required', page.content.decode())

    response = confirm(client, "deny", [queue["first"]], reason="  ")

    assert response.templates[0].name == "admin/requests_app/review_confirm.html"
    assert "a reason is required to deny a request" in text(response)
    assert not Review.objects.filter(reviewer=staff_reviewer).exists()
    queue["first"].refresh_from_db()
    assert queue["first"].state == AccessRequest.State.PENDING


def test_the_list_shows_a_request_past_its_ttl_as_expired_and_filters_by_that(client, staff_reviewer, queue):
    now = timezone.now()
    AccessRequest.objects.filter(pk=queue["first"].pk).update(
        created_at=now - timedelta(days=2), pending_expires_at=now - timedelta(minutes=5)
    )
    client.force_login(staff_reviewer)

    expired = client.get(QUEUE, {"queue": "all", "state": "expired"})
    pending = client.get(QUEUE, {"queue": "all", "state": "pending"})

    assert shown(expired) == {queue["first"].pk}
    assert queue["first"].pk not in shown(pending)
    assert "expired" in text(client.get(change_url(queue["first"])))
    assert "This request is expired; only pending requests can be reviewed." in text(
        client.get(change_url(queue["first"]))
    )


def test_queue_counts_plain_rows_and_summarises_only_the_page(client, staff_reviewer, requester, prod_ssh):
    """The COUNTs and the date drill-down read no review counts; the rows shown still carry them."""
    client.force_login(staff_reviewer)
    hosts = many_resources(3, prefix="h")
    pending_requests(4, requester=requester, role=prod_ssh, resources=hosts)

    with CaptureQueriesContext(connection) as captured:
        response = client.get(QUEUE, {"queue": "all"})

    aggregates = [
        q["sql"]
        for q in captured.captured_queries
        if re.match(r"SELECT (COUNT|MIN|DISTINCT DATE|DISTINCT django)", q["sql"])
    ]
    assert len(aggregates) >= 3, aggregates  # the paginator's count, the date drill-down's range and its days
    assert not [sql for sql in aggregates if "requests_app_review" in sql or "GROUP BY" in sql]
    assert response.context["cl"].result_count == 4
    rows = response.context["cl"].result_list
    assert {(r.approval_count, r.resource_count, len(r.first_resources)) for r in rows} == {(0, 3, 3)}
    assert "0 of 2" in text(response) or "0 of 1" in text(response)
    # The sidebar and every check ask whether one may review once per page, not once per model.
    capability_asks = [
        q
        for q in captured.captured_queries
        if q["sql"].startswith('SELECT DISTINCT 1 AS "a" FROM "accounts_role"') and "accessrequest" not in q["sql"]
    ]
    assert len(capability_asks) <= 4, len(capability_asks)


def _queue_queries(client) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(QUEUE)
    assert response.status_code == 200
    return [q["sql"] for q in captured.captured_queries]


def test_the_queue_costs_at_most_twelve_queries_however_many_wait(client, staff_reviewer, requester, prod_ssh):
    client.force_login(staff_reviewer)
    hosts = many_resources(2, prefix="h")
    pending_requests(3, requester=requester, role=prod_ssh, resources=hosts)
    few = _queue_queries(client)
    # More than a page (QUEUE_PAGE is 100), so the page is cut and a next page offered.
    pending_requests(120, requester=requester, role=prod_ssh, resources=hosts)
    many = _queue_queries(client)

    assert len(many) == len(few) <= 12, many
    # Whether one may review is asked once per page, not once per sidebar entry, filter and template tag.
    asks = [sql for sql in many if sql.startswith('SELECT DISTINCT 1 AS "a" FROM "accounts_role"')]
    assert len(asks) == 1, asks
    # The rule is a semi-join on the request's own roles, not an IN over every reviewable request.
    assert not [sql for sql in many if "IN (SELECT DISTINCT" in sql]


def test_a_request_for_two_roles_is_reviewable_only_by_a_reviewer_of_both(requester, reviewer, prod_ssh, web1, db1):
    db_role = make_role("prod-db", resource_kinds=["db"], reviewers=("dba",))
    both = request_create(requester=requester, resources=[web1, db1], roles=[prod_ssh, db_role], reason="INC-9 both")
    only_ssh = request_create(requester=requester, resources=[web1], roles=[prod_ssh], reason="INC-9 ssh")
    dba = make_user("dora", groups=("dba",))
    lead_and_dba = make_user("lena", groups=("sre-leads", "dba"))
    at = timezone.now()

    def seen(user) -> tuple[set, set, set]:
        return (
            set(AccessRequest.objects.visible_to(user).values_list("pk", flat=True)),
            set(AccessRequest.objects.reviewable_by(user).values_list("pk", flat=True)),
            set(AccessRequest.objects.awaiting_review_by(user, at=at).values_list("pk", flat=True)),
        )

    assert seen(reviewer) == ({only_ssh.pk}, {only_ssh.pk}, {only_ssh.pk})
    assert seen(dba) == (set(), set(), set())
    assert seen(lead_and_dba) == ({both.pk, only_ssh.pk},) * 3
    assert seen(requester)[0] == {both.pk, only_ssh.pk}
    assert seen(requester)[1:] == (set(), set())
    request_review(request=only_ssh, reviewer=lead_and_dba, decision="approve", reason="ok")
    assert seen(lead_and_dba)[2] == {both.pk}
    # A request without any role (not made through the service) is nobody's to review.
    roleless = AccessRequest.objects.create(
        requester=requester, duration=timedelta(minutes=30), pending_expires_at=at + timedelta(hours=1)
    )
    assert roleless.pk not in seen(lead_and_dba)[0] | seen(lead_and_dba)[1]
    assert roleless.pk in seen(requester)[0]


# --- the queue at scale: a count that stops early, no date drill-down, rows built without templates -


def test_the_queue_count_stops_early_and_says_so(client, staff_reviewer, requester, prod_ssh, monkeypatch):
    from requests_app.admin import requests as request_admin

    monkeypatch.setattr(request_admin, "QUEUE_COUNT_CAP", 3)
    monkeypatch.setattr(request_admin.AccessRequestAdmin, "list_per_page", 2)
    hosts = many_resources(1, prefix="h")
    waiting = pending_requests(6, requester=requester, role=prod_ssh, resources=hosts)
    AccessRequest.objects.filter(pk=waiting[0].pk).update(created_at=timezone.now() - timedelta(minutes=5))
    client.force_login(staff_reviewer)

    first = client.get(QUEUE)
    second = client.get(QUEUE, {"p": "2"})
    third = client.get(QUEUE, {"p": "3"})

    # Page 1 counts up to page 2's end (4 of 6): "4+", never a bare 4; each page holds its own rows.
    assert (first.context["cl"].result_count, first.context["cl"].result_count_exact) == (4, False)
    assert "4+ access requests" in text(first) and "4+ results" in text(first)
    assert "Select all 4+ access requests" in text(first)
    assert first.context["selection_note_all"] == "All 4+ selected"
    # Deeper, the count reaches every row and is exact again.
    assert (second.context["cl"].result_count, second.context["cl"].result_count_exact) == (6, True)
    assert "6 access requests" in text(second) and "6+" not in text(second)
    pages = [shown(first), shown(second), shown(third)]
    assert [len(p) for p in pages] == [2, 2, 2]
    assert set().union(*pages) == {r.pk for r in waiting}
    assert waiting[0].pk in pages[2]  # the oldest comes last
    # A page number no page could have is refused as Django refuses any page past the end.
    for absurd in ("9" * 5000, "0", "x"):
        response = client.get(QUEUE, {"p": absurd})
        assert response.status_code in (200, 302), (absurd, response.status_code)


def test_the_queue_still_holds_only_what_awaits_my_review(client, engineer_reviewer, queue, prod_ssh, web1):
    mine = request_create(requester=engineer_reviewer, resources=[web1], reason="my own")
    expired = request_create(requester=queue["first"].requester, resources=[web1], reason="too old")
    now = timezone.now()
    AccessRequest.objects.filter(pk=expired.pk).update(
        created_at=now - timedelta(days=2), pending_expires_at=now - timedelta(minutes=1)
    )
    client.force_login(engineer_reviewer)

    before = shown(client.get(QUEUE))
    assert {queue["first"].pk, queue["second"].pk} <= before
    assert not {mine.pk, expired.pk, queue["other_role"].pk, queue["decided"].pk} & before
    request_review(request=queue["first"], reviewer=engineer_reviewer, decision="approve", reason="ok")
    assert queue["first"].pk not in shown(client.get(QUEUE))
    assert {mine.pk, expired.pk} <= shown(client.get(QUEUE, {"queue": "all"}))


def test_the_queue_has_no_date_drill_down_unless_a_date_was_chosen(client, staff_reviewer, queue):
    client.force_login(staff_reviewer)
    year = str(timezone.now().year)

    with CaptureQueriesContext(connection) as captured:
        waiting = client.get(QUEUE)
    dated = client.get(QUEUE, {"created_at__year": year})
    everything = client.get(QUEUE, {"queue": "all"})

    assert waiting.context["cl"].date_hierarchy is None
    assert not [q for q in captured.captured_queries if re.match(r"SELECT (MIN|DISTINCT (DATE|django))", q["sql"])]
    assert 'class="toplinks"' not in waiting.content.decode()
    # A date chosen before switching to the queue still narrows it, and is shown.
    assert dated.context["cl"].date_hierarchy == "created_at"
    assert shown(dated) == {queue["first"].pk, queue["second"].pk}
    assert everything.context["cl"].date_hierarchy == "created_at"
    assert 'class="toplinks"' in everything.content.decode()


def test_the_row_checkbox_is_djangos_own_markup(client, staff_reviewer, queue):
    from django.contrib import admin
    from django.contrib.admin import ModelAdmin

    model_admin = admin.site._registry[AccessRequest]
    request = queue["first"]
    request.requester.username = 'a<b"c'

    assert model_admin.action_checkbox(request) == ModelAdmin.action_checkbox(model_admin, request)
    client.force_login(staff_reviewer)
    page = client.get(QUEUE).content.decode()
    assert f'name="_selected_action" value="{queue["first"].pk}" class="action-select"' in page
    assert f'href="{change_url(queue["first"])}' in page
