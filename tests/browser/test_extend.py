"""Extend in a real browser: *Extend* on live access, a reason pattern refused, a reviewer who shortens it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from requests_app.models import AccessRequest, Grant
from requests_app.services import request_create, request_review
from tests.browser.test_e2e import PASSWORD, browser, shot, sign_in  # noqa: F401 - browser is a fixture
from tests.conftest import make_resource, make_role, make_user


@pytest.fixture
def approved(transactional_db):
    alice = make_user("alice", groups=("engineers",), password=PASSWORD, first_name="Alice")
    bob = make_user("bob", groups=("sre-leads",), password=PASSWORD)
    make_role(
        "prod-ssh",
        approvals=1,
        reason_pattern=r"INC-[0-9]+.*",
        reason_hint="Start with the incident, e.g. INC-4211.",
    )
    web1 = make_resource("web-1", labels={"env": "prod"}, address="web-1.example.com:22")
    original = request_create(requester=alice, resources=[web1], reason="INC-4211 disk full", duration="30m")
    request_review(request=original, reviewer=bob, decision="approve")
    return original


def test_requester_extends_and_a_reviewer_shortens_the_extension(live_server, browser, approved):  # noqa: F811
    original = approved
    first_grant = original.grants.get()

    requester, page = sign_in(browser, f"{live_server.url}/", "alice")
    grant = page.locator("section[aria-labelledby=grants-title] li")
    expect(grant).to_have_count(1)
    page.click("section[aria-labelledby=grants-title] >> text=Extend")
    expect(page.locator("h1")).to_contain_text("Extend access")
    expect(page.locator("main")).to_contain_text("Start with the incident")
    shot(page, "extend-01-form")
    page.fill("#id_reason", "need more time")
    page.click("button:has-text('Ask for more time')")
    expect(page.locator(".errorlist")).to_contain_text("Start with the incident")
    assert not AccessRequest.objects.filter(extends=original).exists()
    page.fill("#id_reason", "INC-4211 still resyncing")
    page.select_option("#id_duration", label="30 min")
    page.click("button:has-text('Ask for more time')")
    expect(page.locator(".messages")).to_contain_text("Extension requested")
    expect(page.locator("main")).to_contain_text("Extends")
    shot(page, "extend-02-requested")
    extension = AccessRequest.objects.get(extends=original)

    page.goto(f"{live_server.url}/")
    pending = page.locator("section[aria-labelledby=pending-title] li")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text(f"extension of {str(original.pk)[:8]}")
    shot(page, "extend-03-dashboard-pending")

    # The reviewer sees it is an extension and grants 15 minutes of the 30 asked.
    reviewer, page = sign_in(browser, f"{live_server.url}/admin/", "bob", admin=True)
    page.click("text=Awaiting my review")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list tbody tr")).to_contain_text(f"extension of {str(original.pk)[:8]}")
    page.click("#result_list tbody tr th a")
    page.click("text=Approve…")
    expect(page.locator("#review-items")).to_contain_text("extension of")
    page.fill("#id_reason", "15 minutes is enough")
    page.fill("#id_duration", "15m")
    shot(page, "extend-04-reviewer-shortens")
    page.click("input[type=submit].default")
    expect(page.locator(".messagelist")).to_contain_text("now approved")
    reviewer.close()

    (added,) = Grant.objects.filter(request=extension)
    assert added.starts_at == first_grant.expires_at
    assert added.expires_at - added.starts_at == timedelta(minutes=15)
    page = requester.pages[0]
    page.goto(f"{live_server.url}/requests/{extension.pk}/")
    expect(page.locator("main")).to_contain_text("scheduled")
    expect(page.locator("main")).to_contain_text("Shortened to 15")
    shot(page, "extend-05-extension-approved")
    requester.close()
