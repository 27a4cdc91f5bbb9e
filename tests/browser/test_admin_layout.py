"""The admin at 1280 px: every list's table fits beside its filters, long text is cut with the whole on hover.

Drives Debian's Chromium through Playwright like test_e2e.py (skipped without
it, a failure under CI=true).
"""

from __future__ import annotations

import io

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from playwright.sync_api import expect

from accounts.models import ApiToken, User
from inventory.models import Resource
from requests_app import services
from requests_app.credentials.certificates import certificate_issue
from requests_app.models import AccessRequest, Notification
from requests_app.notifications.outbox import email_channel_ensure
from tests.browser import test_e2e
from tests.browser.test_e2e import PASSWORD, shot, sign_in
from tests.conftest import make_user
from tests.ssh.keys import ed25519_key, openssh_public

browser = test_e2e.browser  # the same Chromium fixture
LONG_REASON = "INC-4211 " + "the disk on the web tier is full again and the logs must be rotated by hand " * 5
TABLE_WIDTH = """() => {
  const table = document.querySelector("#result_list");
  const box = document.querySelector(".results");
  return table ? {table: Math.ceil(table.getBoundingClientRect().width), box: box.clientWidth} : null;
}"""


@pytest.fixture
def busy_admin(transactional_db):
    """The demo policy with a little of everything, the longest texts the forms allow here and there."""
    call_command("apply", "-f", "demo/policy.yaml", stdout=io.StringIO())
    email_channel_ensure(name="demo-email", to=[], events=["request.created"])
    alice, bob, carol = (User.objects.get(username=n) for n in ("alice", "bob", "carol"))
    nodes = list(Resource.objects.filter(kind="node", labels__env="prod").order_by("name"))
    big = services.request_create(requester=alice, resources=nodes, reason=LONG_REASON, duration="30m")
    for reviewer in (bob, carol):
        services.request_review(request=big, reviewer=reviewer, decision="approve", reason="fine " * 200)
    services.request_create(requester=alice, resources=nodes[:3], reason="INC-4212 short", duration="30m")
    root = make_user("root", is_staff=True, is_superuser=True, password=PASSWORD)
    grants = list(big.grants.order_by("pk"))
    certificate_issue(grant=grants[1], user=alice, public_key=openssh_public(ed25519_key()))
    services.grant_revoke(grant=grants[0], by=root, reason="laptop stolen " * 100)
    Notification.objects.update(status="failed", last_error="HTTP 500 Internal Server Error: " + "trace " * 100)
    ApiToken.objects.create(user=alice, name="jit on a laptop with a rather long host name, as laptops have")
    # One failed sign-in fills the lockout's pages.
    Client().post("/accounts/login/", {"username": "alice", "password": "wrong"}, HTTP_USER_AGENT="Mozilla/5.0 " * 20)
    return root


def test_every_admin_list_fits_a_1280_px_screen(live_server, browser, busy_admin):
    context, page = sign_in(browser, f"{live_server.url}/admin/", "root", admin=True)
    expect(page.locator("#site-name")).to_have_text("jitportal")
    overflowing = {}
    for model in admin.site._registry:
        path = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        query = "?queue=all" if model is AccessRequest else ""
        page.goto(f"{live_server.url}{path}{query}")
        width = page.evaluate(TABLE_WIDTH)
        assert width is not None, f"{path} lists nothing: the fixture should fill it"
        if width["table"] > width["box"]:
            overflowing[path] = width
            shot(page, f"admin-overflow-{model._meta.model_name}")
    context.close()
    assert overflowing == {}


def test_a_long_reason_is_cut_in_the_queue_and_whole_on_hover(live_server, browser, busy_admin):
    context, page = sign_in(browser, f"{live_server.url}/admin/", "root", admin=True)
    page.goto(f"{live_server.url}{reverse('admin:requests_app_accessrequest_changelist')}?queue=all")

    cell = page.locator("td.field-reason_display span[title]")

    expect(cell).to_have_count(1)
    assert cell.get_attribute("title") == " ".join(LONG_REASON.split())
    assert len(cell.inner_text()) <= 40 and cell.inner_text().endswith("…")
    shot(page, "admin-queue-1280")
    context.close()
