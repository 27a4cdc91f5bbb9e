"""What a reviewer sees all day in the admin: the product's name, apps in words, times with their zone,
filters without stray entries, long text cut with the whole on hover, and a clear queue that says so.

(That every list fits a 1280 px screen is measured in a real browser: tests/browser/test_admin_layout.py.)
"""

from __future__ import annotations

import html
import io
import re

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.urls import reverse

from accounts.models import User
from inventory.models import Resource
from requests_app.models import AccessRequest
from requests_app.services import grant_revoke, request_create, request_review
from tests.conftest import make_user
from tests.requests_app.portal import grant_review_permission

pytestmark = pytest.mark.django_db

QUEUE = reverse("admin:requests_app_accessrequest_changelist")
LONG_REASON = "INC-4211 " + "the disk on the web tier is full again and the logs must be rotated by hand " * 3


def text(response) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def filter_entries(response) -> dict[str, list[str]]:
    """Each filter of a changelist: its title and the entries it offers."""
    page = response.content.decode()
    return {
        title: [html.unescape(e).strip() for e in re.findall(r"<a[^>]*>([^<]*)</a>", body)]
        for title, body in re.findall(r'<details data-filter-title="([^"]*)"[^>]*>(.*?)</details>', page, re.S)
    }


@pytest.fixture
def demo(db):
    """The demo policy with a request awaiting bob, one he decided, and a revoked grant."""
    call_command("apply", "-f", "demo/policy.yaml", stdout=io.StringIO())
    alice, bob, carol = (User.objects.get(username=n) for n in ("alice", "bob", "carol"))
    web1, web2 = Resource.objects.get(name="web-1"), Resource.objects.get(name="web-2")
    waiting = request_create(requester=alice, resources=[web1], reason=LONG_REASON, duration="30m")
    decided = request_create(requester=alice, resources=[web2], reason="INC-4212 short", duration="30m")
    for reviewer in (bob, carol):
        request_review(request=decided, reviewer=reviewer, decision="approve", reason="ok")
    root = make_user("root", is_staff=True, is_superuser=True)
    grant_revoke(grant=decided.grants.get(), by=root, reason="done")
    return {"waiting": waiting, "decided": decided, "bob": bob, "root": root}


def test_every_admin_page_names_the_product(client, demo):
    login = client.get(reverse("admin:login"))
    assert '<div id="site-name"><a href="/admin/">jitportal</a></div>' in login.content.decode()
    assert re.search(r"<title>Log in \| jitportal</title>", login.content.decode())

    client.force_login(demo["root"])
    for url in (reverse("admin:index"), QUEUE, reverse("admin:requests_app_grant_changelist")):
        page = client.get(url).content.decode()
        assert '<div id="site-name"><a href="/admin/">jitportal</a></div>' in page, url
        assert re.search(r"<title>[^<]*\| jitportal</title>", page), url
        assert "Django administration" not in page and "Django site admin" not in page


def test_apps_are_named_in_words(client, demo):
    client.force_login(demo["root"])

    response = client.get(reverse("admin:index"))

    apps = [app["name"] for app in response.context["app_list"]]
    assert {"Access requests", "Accounts", "Inventory"} <= set(apps)
    assert "Requests_App" not in text(response) and "REQUESTS_APP" not in text(response)
    assert "Access requests" in text(client.get(reverse("admin:app_list", args=["requests_app"])))


def test_times_carry_their_zone(client, demo):
    client.force_login(demo["root"])

    grants = text(client.get(reverse("admin:requests_app_grant_changelist")))
    detail = text(client.get(reverse("admin:requests_app_accessrequest_change", args=[demo["decided"].pk])))

    assert re.search(r"[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{2}:\d{2} UTC", grants)
    resolved = AccessRequest.objects.get(pk=demo["decided"].pk).resolved_at
    assert f"{resolved:%b} {resolved.day}, {resolved:%Y, %H:%M} UTC" in detail


def test_no_filter_offers_a_stray_dash(client, demo):
    client.force_login(demo["root"])
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for title, entries in filter_entries(client.get(url, {"queue": "all"})).items():
            assert "-" not in entries and "" not in entries, (url, title, entries)


def test_the_roles_filter_lists_roles_only_and_the_groups_filter_names_no_group(client, demo):
    client.force_login(demo["root"])

    roles = filter_entries(client.get(QUEUE, {"queue": "all"}))["roles"]
    groups = filter_entries(client.get(reverse("admin:accounts_user_changelist")))["groups"]

    assert roles[0] == "All" and "prod-ssh" in roles and "-" not in roles
    assert groups[-1] == "(no group)"


def test_a_long_reason_is_cut_in_the_queue_with_the_whole_on_hover(client, demo):
    client.force_login(demo["root"])

    page = client.get(QUEUE, {"queue": "all"}).content.decode()

    whole = " ".join(LONG_REASON.split())
    cell = re.search(r'<td class="field-reason_display"><span title="([^"]*)">([^<]*)</span></td>', page)
    assert cell and html.unescape(cell.group(1)) == whole
    assert len(html.unescape(cell.group(2))) == 40 and cell.group(2).endswith("…")
    # Short ones are shown as they are.
    assert '<td class="field-reason_display">INC-4212 short</td>' in page


def test_an_empty_queue_says_nothing_awaits_your_review(client, demo):
    bob = grant_review_permission(demo["bob"])
    client.force_login(bob)
    assert "Nothing awaits your review." not in text(client.get(QUEUE))

    request_review(request=demo["waiting"], reviewer=bob, decision="approve", reason="fine")
    response = client.get(QUEUE)

    assert "Nothing awaits your review." in text(response)
    assert 'id="result_list"' not in response.content.decode()
    # Other views of the list stay plain lists.
    assert "Nothing awaits your review." not in text(client.get(QUEUE, {"queue": "all"}))
    assert "Nothing awaits your review." not in text(client.get(QUEUE, {"q": "no such thing"}))
    assert AccessRequest.objects.filter(pk=demo["waiting"].pk, state="pending").exists()
