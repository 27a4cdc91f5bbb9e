"""The admin is the portal's own AdminSite: its gate, sign-in form and index live in the class."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory
from django.urls import reverse

from accounts.models import Capability
from requests_app.admin_site import AdminLoginForm, PortalAdminSite
from tests.conftest import give_capabilities, make_role, make_user

pytestmark = pytest.mark.django_db


def test_the_default_site_is_the_portal_site_and_nothing_patches_it():
    assert isinstance(admin.site, PortalAdminSite)
    site = admin.site._wrapped
    # Behaviour comes from the class, not from attributes set on the instance at import.
    assert not {"index", "has_permission", "login_form"} & set(vars(site))
    assert site.site_header == "jitportal"
    assert site.login_form is AdminLoginForm


def test_any_portal_site_lets_in_reviewers_and_auditors_but_not_plain_users():
    make_role("ops", reviewers=("sre-leads",))
    reviewer = make_user("rita", groups=("sre-leads",))
    auditor = give_capabilities(make_user("audrey"), Capability.AUDIT)
    plain = make_user("paul")
    site = PortalAdminSite(name="another")
    request = RequestFactory().get("/")
    for user, allowed in ((reviewer, True), (auditor, True), (plain, False)):
        request.user = user
        assert site.has_permission(request) is allowed, user


def test_a_reviewer_signs_in_through_the_admin_form_and_sees_the_summary():
    make_role("ops", reviewers=("sre-leads",))
    make_user("rita", groups=("sre-leads",), password="pw-rita-1")
    client = Client()
    response = client.post(
        reverse("admin:login"), {"username": "rita", "password": "pw-rita-1", "next": reverse("admin:index")}
    )
    assert response.status_code == 302
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    assert index.context["review_summary"].awaiting == 0
    assert "<title>Site administration | jitportal</title>" in index.content.decode()
