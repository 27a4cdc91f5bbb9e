"""``request_preview``: the one rule for what a new request would be, used by the form, its page and the service."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.selectors import roles_requestable_by
from jitportal.errors import DomainError
from requests_app.forms import AccessRequestForm
from requests_app.models import AccessRequest
from requests_app.preview import DEFAULT_DURATION, RequestPreview, request_preview
from requests_app.services import request_create
from tests.conftest import make_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def roles(prod_ssh, web_ssh):
    """prod-ssh (2 approvals, 1 h, reason required) and web-ssh (1 approval, 30 min): both fit web-1 and web-2."""
    db_role = make_role(
        "prod-db", resource_kinds=["db"], approvals=3, max_duration=timedelta(hours=8), pending_ttl=timedelta(hours=2)
    )
    return {"prod": prod_ssh, "web": web_ssh, "db": db_role}


def test_preview_reads_no_database(requester, roles, web1, db1):
    requestable = roles_requestable_by(requester)
    with CaptureQueriesContext(connection) as captured:
        chosen = request_preview(requestable=requestable, resources=[web1, db1], allow_choice=True)
        named = request_preview(requestable=requestable, resources=[web1, db1], roles=[roles["web"], roles["db"]])
        named.duration("20m")
        named.reason_check("INC-1")
    assert len(captured) == 0
    assert isinstance(chosen, RequestPreview)
    assert chosen.fixed == (roles["db"],) and chosen.choices == (roles["prod"], roles["web"])
    assert chosen.needing_choice == [web1]
    assert named.roles == (roles["web"], roles["db"])


def test_thresholds_duration_and_reason_follow_the_roles(requester, roles, web1, db1):
    preview = request_preview(
        requestable=roles_requestable_by(requester), resources=[web1, db1], roles=[roles["prod"], roles["db"]]
    )
    assert preview.approvals_required == 3
    assert preview.denials_required == 1
    assert preview.pending_ttl == timedelta(hours=2)
    assert not preview.auto_approve
    assert preview.duration_cap == timedelta(hours=1)
    assert preview.default_duration == min(DEFAULT_DURATION, timedelta(hours=1))
    assert preview.duration("") == preview.default_duration
    with pytest.raises(DomainError, match=r"longer than the maximum of 1 ?h.*\(role prod-ssh\)") as refused:
        preview.duration("2h")
    assert refused.value.field == "duration"
    assert preview.reason_required_by == (roles["prod"],)
    assert preview.reason_hints == ("link the ticket",)
    with pytest.raises(DomainError, match=r"^a reason is required by role prod-ssh \(link the ticket\)$"):
        preview.reason_check("")


def test_a_choice_is_left_open_for_the_form_and_refused_for_the_service(requester, roles, web1):
    requestable = roles_requestable_by(requester)
    with pytest.raises(DomainError, match="several roles you may request") as refused:
        request_preview(requestable=requestable, resources=[web1])
    assert refused.value.field == "roles"
    open_choice = request_preview(requestable=requestable, resources=[web1], allow_choice=True)
    # Before a choice nothing is sure: the longest cap on offer, thresholds over every candidate.
    assert open_choice.fixed == () and open_choice.duration_cap == timedelta(hours=1)
    assert open_choice.approvals_required == 2


def test_form_page_and_service_agree_on_what_the_request_will_be(client, requester, roles, web1, db1):
    """The page offers what the preview says, and the request made records the same thresholds and cap."""
    client.force_login(requester)
    page = client.get(reverse("request-new"), {"resource": [web1.ref, db1.ref]})
    assert page.status_code == 200
    selection = page.context["selection"]
    form = page.context["form"]
    assert isinstance(selection, RequestPreview) and isinstance(form, AccessRequestForm)
    assert page.context["approvals"] == selection.approvals_required == 3
    assert form.fields["duration"].initial == str(int(selection.default_duration.total_seconds()))
    assert [name for name, _ in form.fields["roles"].choices] == ["prod-ssh", "web-ssh"]

    created = request_create(
        requester=requester, resources=[web1, db1], roles=[roles["web"], roles["db"]], reason="INC-7"
    )
    preview = request_preview(
        requestable=roles_requestable_by(requester), resources=[web1, db1], roles=[roles["web"], roles["db"]]
    )
    assert created.approvals_required == preview.approvals_required
    assert created.denials_required == preview.denials_required
    assert created.pending_expires_at - created.created_at == preview.pending_ttl
    assert created.duration == preview.default_duration == timedelta(minutes=30)
    assert created.state == AccessRequest.State.PENDING


def test_the_page_refuses_too_many_resources_before_resolving_them(client, requester, roles, settings):
    settings.JITPORTAL_MAX_RESOURCES_PER_REQUEST = 2
    client.force_login(requester)
    with CaptureQueriesContext(connection) as captured:
        page = client.get(reverse("request-new"), {"resource": ["a", "b", "c"]})
    assert page.status_code == 400
    assert "at most 2 resources per request" in page.content.decode()
    assert not any("inventory_resource" in q["sql"] for q in captured.captured_queries)
