"""End to end in a real browser: request, two reviews in the admin, access on the dashboard.

Drives Debian's Chromium (/usr/bin/chromium) through Playwright's Python
package; no browser is ever downloaded. Screenshots of each step land in
test-output/browser/. Without Chromium (a bare laptop) the test is skipped;
.ci/run installs it, and under CI=true its absence is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from requests_app.models import AccessRequest, Grant
from requests_app.services import request_create, request_review
from tests.conftest import make_resource, make_role, make_user

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "browser"
PASSWORD = "browser-test-pass"


@pytest.fixture
def browser(monkeypatch):
    if not CHROMIUM.exists():
        message = "/usr/bin/chromium is not installed (apt-get install chromium; .ci/run does)"
        # A laptop without it skips; CI must run the test, so there it is a failure.
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Playwright's sync API runs an event loop in this thread; the test's own
    # ORM calls are plain synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def people(transactional_db):
    alice = make_user("alice", groups=("engineers",), password=PASSWORD, first_name="Alice")
    # Reviewers sign in to the admin through their reviewer group alone: no staff flag.
    reviewers = [make_user(name, groups=("sre-leads",), password=PASSWORD) for name in ("bob", "carol")]
    make_role("prod-ssh", approvals=2, reason="required", reason_hint="Link the incident.")
    for name in ("web-1", "web-2", "api-1"):
        make_resource(name, labels={"env": "prod", "team": name.split("-")[0]}, address=f"{name}.example.com:22")
    make_resource("dev-1", labels={"env": "dev", "team": "web"})
    return alice, *reviewers


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(browser, url: str, username: str, *, admin: bool = False):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(url)
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]" if admin else "button[type=submit]")
    return context, page


def test_request_two_reviews_and_access_on_the_dashboard(live_server, browser, people):
    _alice, _bob, _carol = people

    # The requester signs in, searches and asks for two servers.
    requester, page = sign_in(browser, f"{live_server.url}/", "alice")
    expect(page.locator("h1")).to_have_text("Hello, Alice")
    shot(page, "01-requester-dashboard-empty")
    page.click("nav >> text=Find resources")
    page.fill("#id_label", "env=prod")
    page.fill("#id_search", "web")
    page.click("button:has-text('Search')")
    # Not api-1 (the text), not dev-1 (no role alice may request reaches it).
    expect(page.locator(".result label")).to_have_text(["web-1", "web-2"])
    shot(page, "02-requester-search")
    page.check("input[aria-label='Select web-1']")
    page.check("input[aria-label='Select web-2']")
    page.click("button:has-text('Request access') >> nth=0")
    expect(page.locator("aside")).to_contain_text("Needs 2 approvals")
    page.fill("#id_reason", "INC-4211 disk full on the web tier")
    page.select_option("#id_duration", label="30 min")
    shot(page, "03-requester-form")
    page.click("button:has-text('Send request')")
    expect(page.locator(".messages")).to_contain_text("Request sent")
    expect(page.locator("main")).to_contain_text("0 of 2 approvals")
    shot(page, "04-requester-request-sent")
    access_request = AccessRequest.objects.get()
    assert {r.name for r in access_request.resources.all()} == {"web-1", "web-2"}

    # A reviewer approves from the queue in the admin, through the confirmation page.
    first, page = sign_in(browser, f"{live_server.url}/admin/", "bob", admin=True)
    expect(page.locator("[data-summary=awaiting]")).to_have_text("1")
    shot(page, "05-reviewer-admin-index")
    page.click("text=Awaiting my review")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    shot(page, "06-reviewer-queue")
    page.check("#result_list tbody input.action-select")
    page.select_option("select[name=action]", "approve_selected")
    page.click("button[name=index]")
    expect(page.locator("h1")).to_have_text("Approve 1 access request")
    page.fill("#id_reason", "matches INC-4211")
    shot(page, "07-reviewer-confirm")
    page.click("input[type=submit].default")
    expect(page.locator(".messagelist")).to_contain_text("still pending, 1 of 2 approvals")
    shot(page, "08-reviewer-approved")
    first.close()

    # The second reviewer approves from the request's own page; the threshold is met.
    second, page = sign_in(browser, f"{live_server.url}/admin/", "carol", admin=True)
    page.click("text=Awaiting my review")
    page.click("#result_list tbody tr th a")
    expect(page.locator("#review-actions")).to_contain_text("Approve…")
    shot(page, "09-second-reviewer-request")
    page.click("text=Approve…")
    page.fill("#id_reason", "ok from carol")
    page.click("input[type=submit].default")
    expect(page.locator(".messagelist")).to_contain_text("now approved")
    shot(page, "10-second-reviewer-approved")
    second.close()

    access_request.refresh_from_db()
    assert access_request.state == AccessRequest.State.APPROVED
    assert Grant.objects.filter(request=access_request).count() == 2

    # The requester's dashboard shows both grants, counting down.
    page = requester.pages[0]
    page.goto(f"{live_server.url}/")
    grants = page.locator("section[aria-labelledby=grants-title] li")
    expect(grants).to_have_count(2)
    expect(grants.nth(0)).to_contain_text("web-1")
    expect(grants.nth(1)).to_contain_text("web-2")
    for i in range(2):
        expect(grants.nth(i)).to_contain_text("expires in")
    shot(page, "11-requester-dashboard-active")
    requester.close()


def test_give_access_back_from_the_dashboard_and_the_request_page(live_server, browser, people):
    alice, bob, carol = people
    made = request_create(
        requester=alice, resources=["node/web-1", "node/web-2"], reason="INC-5 deploy", duration="30m"
    )
    for reviewer in (bob, carol):
        request_review(request=made, reviewer=reviewer, decision="approve", reason="ok")

    requester, page = sign_in(browser, f"{live_server.url}/", "alice")
    grants = page.locator("section[aria-labelledby=grants-title] li")
    expect(grants).to_have_count(2)

    # One grant back from the dashboard: a confirmation page first, then a POST.
    grants.filter(has_text="web-1").locator("text=give back…").click()
    expect(page.locator("h1")).to_have_text("Give access back?")
    expect(page.locator("#drop-grants")).to_contain_text("node/web-1")
    expect(page.locator("#drop-grants")).not_to_contain_text("node/web-2")
    shot(page, "12-requester-give-back-confirm")
    page.fill("#drop-reason", "web-1 done")
    page.click("#drop-form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("Access given back")
    expect(page.locator("section[aria-labelledby=grants-title] tr", has_text="web-1")).to_contain_text("revoked")
    assert Grant.objects.get(resource__name="web-1").revoke_reason == "web-1 done"
    assert Grant.objects.get(resource__name="web-2").revoked_at is None

    # The rest from the request's page: the request ends, nothing is left to give back.
    page.click("#give-back")
    expect(page.locator("#drop-grants li")).to_have_count(1)
    page.click("#drop-form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("Access given back")
    expect(page.locator("h1 .badge")).to_have_text("Revoked")
    expect(page.locator("#give-back")).to_have_count(0)
    shot(page, "13-requester-given-back")
    made.refresh_from_db()
    assert made.state == AccessRequest.State.REVOKED
    page.goto(f"{live_server.url}/")
    expect(page.locator("section[aria-labelledby=grants-title] li")).to_have_count(0)
    requester.close()
