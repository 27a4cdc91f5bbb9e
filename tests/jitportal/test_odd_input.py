"""Odd input is a 4xx naming the field and changes nothing, never a server error.

The NUL cases matter on PostgreSQL, which refuses any string holding one (a
500 there); run this file with DATABASE_URL pointing at PostgreSQL too.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from audit.models import AuditEvent
from requests_app.models import AccessRequest
from tests.conftest import make_role, make_user

REQUESTS = "/api/v1/requests/"
TOKEN = "/api/v1/auth/token/"
NUL = "Null characters are not allowed."


@pytest.fixture
def web_ssh(db):
    return make_role("web-ssh", approvals=1, max_duration=timedelta(hours=4))


@pytest.fixture
def superuser(db):
    return make_user("root", is_staff=True, is_superuser=True)


def post_json(client, url: str, raw: str):
    return client.post(url, data=raw, content_type="application/json")


def assert_json_400(response, field: str):
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    assert field in response.json(), response.json()


# --- NUL characters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        ("/api/v1/resources/", {"label": "env=prod\x00"}, "label"),
        ("/api/v1/resources/", {"search": "web\x00"}, "search"),
        ("/api/v1/access-check/", {"resource": "node/web\x00-1"}, "resource"),
        ("/api/v1/access-check/", {"resource": "node/web-1", "login": "ubu\x00ntu"}, "login"),
        ("/api/v1/requests/", {"role": "prod\x00"}, "role"),
        ("/api/v1/grants/", {"user": "al\x00ice"}, "user"),
        ("/api/v1/audit/", {"actor": "\x00"}, "actor"),
    ],
)
def test_nul_in_a_query_parameter_is_a_json_400_naming_it(api, superuser, requester, web_ssh, web1, url, params, field):
    response = api(superuser if url.startswith("/api/v1/audit") else requester).get(url, params)

    assert_json_400(response, field)
    assert response.json()[field] == [NUL]


@pytest.mark.parametrize("path", ["/api/v1/roles/a%00b/", "/api/v1/resources/web%00-1/ssh-principals/"])
def test_nul_in_a_path_segment_is_a_json_400(api, superuser, web_ssh, web1, path):
    response = api(superuser).get(path)

    assert_json_400(response, "path")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"resources": ["node/web\u0000-1"], "reason": "INC-1"}, "resources"),
        ({"resources": ["node/web-1"], "reason": "INC\u0000-1"}, "reason"),
        ({"resources": ["node/web-1"], "reason": "INC-1", "duration": "1h\u0000"}, "duration"),
        ({"resources": ["node/web-1"], "reason": "INC-1", "suggested_reviewers": ["b\u0000ob"]}, "suggested_reviewers"),
        ({"roles": ["web\u0000-ssh"], "reason": "INC-1"}, "roles"),
        ({"resources": [{"x": "\u0000"}], "reason": "INC-1"}, "resources"),
    ],
)
def test_nul_in_a_json_string_is_a_400_naming_the_field_and_creates_nothing(api, requester, web_ssh, web1, body, field):
    response = api(requester).post(REQUESTS, body)

    assert_json_400(response, field)
    assert not AccessRequest.objects.exists()


def test_nul_in_a_json_key_is_a_400(api, requester, web_ssh, web1):
    response = post_json(api(requester), REQUESTS, '{"resources": ["node/web-1"], "re\\u0000ason": "x"}')

    assert response.status_code == 400
    assert not AccessRequest.objects.exists()


def test_nul_on_the_anonymous_token_endpoint(requester):
    response = APIClient().post(TOKEN, {"username": "alice\u0000", "password": "pw-correct-horse"}, format="json")

    assert_json_400(response, "username")
    assert not ApiToken.objects.exists()


def test_nul_on_a_portal_page_is_a_plain_400(client, requester, web_ssh, web1):
    client.force_login(requester)

    search = client.get(reverse("resource-search"), {"label": "\x00"})
    form = client.post(f"{reverse('request-new')}?resource=node/web-1", {"reason": "INC\x00", "duration": "900"})

    for response in (search, form):
        assert response.status_code == 400
        assert response["Content-Type"].startswith("text/plain")
    assert b"label" in search.content and b"reason" in form.content
    assert not AccessRequest.objects.exists()


def test_nul_on_the_login_form_is_a_400(db):
    response = Client().post("/accounts/login/", {"username": "al\x00ice", "password": "x"})

    assert response.status_code == 400


# --- Unicode digits: str.isdigit() accepts them, int() does not ---------------------------------


@pytest.mark.parametrize("ref", ["¹", "²", "1²"])
def test_unicode_digits_as_a_resource_are_a_400_naming_it(api, requester, web_ssh, web1, ref):
    created = api(requester).post(REQUESTS, {"resources": [ref], "reason": "INC-1"})
    checked = api(requester).get("/api/v1/access-check/", {"resource": ref})

    assert_json_400(created, "resources")
    assert_json_400(checked, "resource")
    assert not AccessRequest.objects.exists()


def test_unicode_digits_in_paths_and_pages_are_4xx(api, client, requester, superuser, web_ssh, web1):
    host = api(superuser)
    assert host.get("/api/v1/resources/%C2%B2/ssh-principals/").status_code == 404
    assert api(requester).get("/api/v1/resources/%C2%B2/").status_code == 404
    assert api(requester).get("/api/v1/grants/%C2%B2/").status_code == 404
    assert api(requester).get("/api/v1/resources/", {"page": "²"}).status_code == 404
    client.force_login(requester)
    assert client.get(reverse("request-new"), {"resource": "²"}).status_code == 400


@pytest.mark.parametrize("duration", ["²h", "¹", "٣h"])
def test_unicode_digits_as_a_duration_are_a_400(api, requester, web_ssh, web1, duration):
    response = api(requester).post(REQUESTS, {"resources": ["node/web-1"], "reason": "INC-1", "duration": duration})

    assert_json_400(response, "duration")


# --- deep nesting ------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_json_nested_deeply_is_a_400(api, requester, web_ssh, web1, depth):
    deep = "[" * depth + "]" * depth
    for raw in (deep, json.dumps({"resources": "X"}).replace('"X"', deep)):
        response = post_json(api(requester), REQUESTS, raw)
        assert response.status_code == 400, response.content
        assert response["Content-Type"].startswith("application/json")
    assert not AccessRequest.objects.exists()


def test_json_nested_deeply_on_the_anonymous_token_endpoint_is_a_400(db):
    deep = "{" + '"a":{' * 5_000 + "}" * 5_001

    response = post_json(APIClient(), TOKEN, deep)

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")


def test_moderately_nested_json_is_refused_before_any_recursion(api, requester, web_ssh, web1):
    response = post_json(api(requester), REQUESTS, '{"resources": ' + "[" * 900 + "]" * 900 + "}")

    assert response.status_code == 400


# --- time-zone offsets PostgreSQL refuses -------------------------------------------------------


@pytest.mark.parametrize("param", ["until", "since"])
def test_audit_filter_with_an_offset_postgresql_refuses_is_a_400_naming_it(api, superuser, param):
    response = api(superuser).get("/api/v1/audit/", {param: "2026-01-01T00:00:00+19:38"})

    assert_json_400(response, param)


def test_audit_filter_with_a_real_offset_works(api, superuser):
    response = api(superuser).get("/api/v1/audit/", {"until": "2026-01-01T00:00:00+14:00"})

    assert response.status_code == 200


def test_start_time_with_an_offset_postgresql_refuses_is_a_400(api, requester, web_ssh, web1):
    body = {"resources": ["node/web-1"], "reason": "INC-1", "start_time": "2999-01-01T00:00:00+19:38"}

    response = api(requester).post(REQUESTS, body)

    assert_json_400(response, "start_time")
    assert not AccessRequest.objects.exists()


def test_portal_start_time_with_an_offset_postgresql_refuses_is_a_form_error(client, requester, web_ssh, web1):
    start = (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+19:38")
    client.force_login(requester)

    response = client.post(
        f"{reverse('request-new')}?resource=node/web-1", {"reason": "INC-1", "duration": "900", "start_time": start}
    )

    assert response.status_code == 400
    assert b"offset" in response.content
    assert not AccessRequest.objects.exists()


# --- bodies over the upload limit ---------------------------------------------------------------


def test_a_body_over_the_limit_is_a_json_413_on_the_api(api, requester, web_ssh, web1, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    raw = json.dumps({"resources": ["node/web-1"], "reason": "x" * 2048})

    created = post_json(api(requester), REQUESTS, raw)
    token = post_json(APIClient(), TOKEN, json.dumps({"username": "alice", "password": "x" * 2048}))

    for response in (created, token):
        assert response.status_code == 413, response.content
        assert response["Content-Type"].startswith("application/json")
        assert "detail" in response.json()
    assert not AccessRequest.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="token.").exists()


def test_too_many_query_parameters_is_a_json_400_on_the_api(api, requester, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10

    response = api(requester).get("/api/v1/resources/?" + "&".join(f"label=k{i}" for i in range(20)))

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("header", ["HTTP_AUTHORIZATION", "HTTP_COOKIE"])
def test_nul_in_a_header_looked_up_in_the_database_is_a_400(requester, header):
    value = "Token jit_ab\x00" + "x" * 70 if header == "HTTP_AUTHORIZATION" else "sessionid=abcdefgh\x00ijkl"

    api = APIClient().get("/api/v1/me/", **{header: value})
    page = Client().get("/", **{header: value})

    assert_json_400(api, header.removeprefix("HTTP_").title())
    assert page.status_code == 400
