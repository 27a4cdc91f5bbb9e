"""Every API view derives from the one restricting base, and the base restricts by the model's rule."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework import mixins
from rest_framework.test import APIRequestFactory, force_authenticate

from jitportal.restricted import Restricted, RestrictedViewSet
from requests_app import services
from requests_app.api.serializers import GrantSerializer
from requests_app.api.views import AccessRequestViewSet
from requests_app.models import AccessRequest, Grant
from tests.conftest import make_user

ROOT = Path(__file__).resolve().parent.parent.parent


def _api_view_classes(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _api_view_classes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and route.startswith("api/v1/"):
            view = pattern.callback
            yield route, getattr(view, "cls", None)


def test_every_api_view_derives_from_the_restricting_base():
    found = list(_api_view_classes(get_resolver().url_patterns))
    assert len(found) > 10
    outside = sorted(route for route, cls in found if cls is None or not issubclass(cls, Restricted))
    assert outside == []


def test_the_bypass_is_named_and_used_in_one_place():
    """Looking a row up past visibility is spelt ``unrestricted_get``, never as a bare manager call in a view."""
    users = []
    for path in [*ROOT.glob("*/api/*.py"), *ROOT.glob("*/*/api.py")]:
        if "tests" in path.parts or ".venv" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "unrestricted_get":
                users.append(path.relative_to(ROOT).as_posix())
    assert users == ["requests_app/api/views.py"]


class _Grants(mixins.ListModelMixin, RestrictedViewSet):
    """A viewset that says nothing about visibility."""

    queryset = Grant.objects.order_by("id")
    serializer_class = GrantSerializer


@pytest.mark.django_db
def test_a_viewset_that_names_only_its_queryset_still_shows_only_visible_rows(
    requester, reviewer, reviewer2, prod_ssh, web1
):
    made = services.request_create(requester=requester, resources=[web1], reason="INC-1", duration="30m")
    for who in (reviewer, reviewer2):
        services.request_review(request=made, reviewer=who, decision="approve")
    assert made.grants.count() == 1
    view = _Grants.as_view({"get": "list"})

    def listed(user):
        request = APIRequestFactory().get("/")
        force_authenticate(request, user=user)
        response = view(request)
        assert response.status_code == 200
        body = response.data
        return [row["id"] for row in (body["results"] if isinstance(body, dict) else body)]

    assert listed(requester) == [made.grants.get().pk]
    assert listed(make_user("nobody")) == []


@pytest.mark.django_db
def test_unrestricted_get_reaches_a_hidden_row_and_is_visible_says_it_is_hidden(requester, prod_ssh, web1):
    made = services.request_create(requester=requester, resources=[web1], reason="INC-1", duration="30m")
    view = AccessRequestViewSet()
    view.request = SimpleNamespace(user=make_user("stranger"))
    assert view.unrestricted_get(made.pk) == made
    assert view.is_visible(made) is False
    assert AccessRequest.objects.visible_to(view.request.user).count() == 0
