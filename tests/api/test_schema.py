"""The OpenAPI schema and its UI: public, complete, served without a CDN."""

from __future__ import annotations

import re

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

CONTRACT = {
    "/api/v1/auth/token/": {"post", "delete"},
    "/api/v1/me/": {"get"},
    "/api/v1/resources/": {"get"},
    "/api/v1/resources/{id}/": {"get"},
    "/api/v1/roles/": {"get"},
    "/api/v1/roles/{name}/": {"get"},
    "/api/v1/requests/": {"get", "post"},
    "/api/v1/requests/{id}/": {"get"},
    "/api/v1/requests/{id}/reviews/": {"post"},
    "/api/v1/requests/{id}/cancel/": {"post"},
    "/api/v1/requests/{id}/extend/": {"post"},
    "/api/v1/requests/{id}/drop/": {"post"},
    "/api/v1/requests/{id}/post-review/": {"post"},
    "/api/v1/grants/": {"get"},
    "/api/v1/grants/{id}/": {"get"},
    "/api/v1/grants/{id}/revoke/": {"post"},
    "/api/v1/grants/{id}/drop/": {"post"},
    "/api/v1/access-check/": {"get"},
    "/api/v1/audit/": {"get"},
    "/api/v1/audit/{id}/": {"get"},
    "/api/v1/audit/verify/": {"get"},
    "/api/v1/grants/{id}/certificate/": {"post"},
    "/api/v1/ca/ssh/": {"get"},
    "/api/v1/resources/{ref}/ssh-principals/": {"get"},
    "/api/v1/ssh/revoked-keys/": {"get"},
}


@pytest.fixture
def schema(db) -> dict:
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def test_schema_is_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "jitportal API"


def test_schema_lists_every_v1_path_with_its_methods(schema):
    methods = {"get", "post", "put", "patch", "delete"}

    documented = {path: set(ops) & methods for path, ops in schema["paths"].items()}

    assert documented == CONTRACT


def test_schema_documents_the_query_parameters_integrations_use(schema):
    def params(path):
        return {p["name"] for p in schema["paths"][path]["get"].get("parameters", [])}

    assert {"kind", "label", "search", "page", "page_size"} <= params("/api/v1/resources/")
    assert {"state", "scope"} <= params("/api/v1/requests/")
    assert {"active"} <= params("/api/v1/grants/")
    assert {"user", "resource", "login"} <= params("/api/v1/access-check/")
    assert {"action", "actor"} <= params("/api/v1/audit/")


def test_schema_documents_token_auth_and_durations_in_seconds(schema):
    components = schema["components"]

    assert components["securitySchemes"]["knoxApiToken"]["name"] == "Authorization"
    assert components["schemas"]["Role"]["properties"]["max_duration"]["type"] == "integer"
    assert components["schemas"]["AccessRequest"]["properties"]["duration"]["type"] == "integer"
    assert set(components["schemas"]["TokenResponse"]["properties"]) == {"token", "expires_at", "username"}


def test_schema_is_also_served_as_json(db):
    response = APIClient().get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    assert response.json()["paths"].keys() == CONTRACT.keys()


def test_schema_generates_without_warnings(tmp_path):
    # --fail-on-warn turns every drf-spectacular guess (an untyped field, an
    # unknown path parameter) into a failure, so the published contract stays exact.
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))

    assert yaml.safe_load((tmp_path / "schema.yaml").read_text())["paths"].keys() == CONTRACT.keys()


def test_docs_page_is_html_served_from_our_own_static_files(db):
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "SwaggerUIBundle" in html
    assert '"/api/schema/"' in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, "the page loads its scripts and styles"
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        assert finders.find(asset.removeprefix("/static/")), f"{asset} is not shipped"
    assert not re.search(r"https?://", html), "no external CDN or host"
