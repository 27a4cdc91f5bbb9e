"""SCIM 2.0 provisioning with the requests identity providers send: the RFC 7644 examples, Okta's and Entra ID's.

Each bad body is refused with a SCIM error (``scimType``) and changes
nothing; every endpoint is tried without a token and without ``scim``.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import token_create
from audit.models import AuditEvent
from tests.conftest import give_capabilities, make_user

pytestmark = pytest.mark.django_db

BASE = "/scim/v2"
SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def bearer(user) -> APIClient:
    _, secret = token_create(user=user, name="idp", by=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


class Scim:
    """An identity provider's client: bearer token, bodies as application/scim+json."""

    def __init__(self, client: APIClient):
        self.client = client

    def call(self, method: str, path: str, body=None, **params):
        data = json.dumps(body) if body is not None else None
        response = getattr(self.client, method)(
            f"{BASE}{path}", data=data, content_type=SCIM_JSON, QUERY_STRING=_query(params)
        )
        return response

    def get(self, path, **params):
        return self.call("get", path, **params)

    def post(self, path, body):
        return self.call("post", path, body)

    def put(self, path, body):
        return self.call("put", path, body)

    def patch(self, path, *operations):
        return self.call("patch", path, {"schemas": [PATCH_SCHEMA], "Operations": list(operations)})

    def delete(self, path):
        return self.call("delete", path)


def _query(params) -> str:
    return urlencode(params)


@pytest.fixture
def provisioner(db):
    """The identity provider's service account: capability scim, nothing else."""
    return give_capabilities(make_user("okta-scim"), "scim")


@pytest.fixture
def idp(provisioner) -> Scim:
    return Scim(bearer(provisioner))


@pytest.fixture
def engineers(db):
    return Group.objects.get_or_create(name="engineers")[0]


def scim_error(response, status: int, scim_type: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(SCIM_JSON)
    body = response.json()
    assert body["schemas"] == [ERROR_SCHEMA]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type
    return body


def database_state() -> tuple:
    users = list(
        User.objects.order_by("pk").values_list(
            "pk", "username", "external_id", "first_name", "last_name", "email", "is_active"
        )
    )
    members = list(User.groups.through.objects.order_by("pk").values_list("user_id", "group_id"))
    return users, members, AuditEvent.objects.count()


# --- who may call -----------------------------------------------------------------------------

ENDPOINTS = [
    ("get", "/Users", None),
    ("post", "/Users", {"schemas": [USER_SCHEMA], "userName": "x"}),
    ("get", "/Users/1", None),
    ("put", "/Users/1", {"userName": "x"}),
    ("patch", "/Users/1", {"Operations": [{"op": "replace", "path": "active", "value": False}]}),
    ("delete", "/Users/1", None),
    ("get", "/Groups", None),
    ("post", "/Groups", {"displayName": "new"}),
    ("get", "/Groups/1", None),
    ("put", "/Groups/1", {"displayName": "engineers", "members": []}),
    ("patch", "/Groups/1", {"Operations": [{"op": "remove", "path": "members"}]}),
    ("delete", "/Groups/1", None),
    ("get", "/ServiceProviderConfig", None),
    ("get", "/ResourceTypes", None),
    ("get", "/Schemas", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_endpoint_refuses_a_caller_without_a_token_or_without_scim(method, path, body, requester, engineers):
    holder_of_others = give_capabilities(make_user("erin-auditor"), "audit", "check_access", "revoke")
    without_scim = Scim(bearer(holder_of_others))
    wrong_token = APIClient()
    wrong_token.credentials(HTTP_AUTHORIZATION="Bearer jit_not-a-token")
    # A session is not how a provider signs in: even a superuser's session is not taken.
    session = APIClient()
    session.force_login(make_user("root", is_superuser=True, is_staff=True))
    before = database_state()

    anonymous = Scim(APIClient()).call(method, path, body)
    scim_error(anonymous, 401)
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    scim_error(Scim(wrong_token).call(method, path, body), 401)
    scim_error(Scim(session).call(method, path, body), 401)
    assert scim_error(without_scim.call(method, path, body), 403)["detail"] == "You need the scim capability."

    assert database_state() == before


def test_a_token_of_a_deactivated_provisioner_is_refused(idp, provisioner):
    User.objects.filter(pk=provisioner.pk).update(is_active=False)

    scim_error(idp.get("/Users"), 401)


def test_the_token_is_read_as_bearer_not_in_the_apis_token_scheme(provisioner):
    """SCIM clients send ``Bearer``; the portal's ``Token`` scheme is not what this endpoint reads."""
    _, secret = token_create(user=provisioner, by=provisioner)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")

    scim_error(Scim(client).get("/Users"), 401)


# --- discovery ----------------------------------------------------------------------------------


def test_discovery_documents_describe_what_is_supported(idp):
    config = idp.get("/ServiceProviderConfig")
    assert config.status_code == 200
    assert config["Content-Type"].startswith(SCIM_JSON)
    body = config.json()
    assert body["patch"] == {"supported": True}
    assert body["bulk"]["supported"] is False
    assert body["filter"] == {"supported": True, "maxResults": 200}
    assert body["authenticationSchemes"][0]["type"] == "oauthbearertoken"

    types = idp.get("/ResourceTypes").json()
    assert [t["endpoint"] for t in types["Resources"]] == ["/Users", "/Groups"]
    assert idp.get("/ResourceTypes/Group").json()["schema"] == GROUP_SCHEMA
    scim_error(idp.get("/ResourceTypes/Device"), 404)

    schemas = idp.get("/Schemas").json()
    assert [s["id"] for s in schemas["Resources"]] == [USER_SCHEMA, GROUP_SCHEMA]
    user_schema = idp.get(f"/Schemas/{USER_SCHEMA}").json()
    assert {a["name"] for a in user_schema["attributes"]} >= {"userName", "externalId", "active", "emails", "name"}


# --- users: create ------------------------------------------------------------------------------

# RFC 7644 section 3.3's example, with Okta's password and Entra ID's enterprise extension added.
RFC_USER = {
    "schemas": [USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
    "userName": "bjensen",
    "externalId": "00u1a2b3c4",
    "name": {"formatted": "Ms. Barbara J Jensen III", "familyName": "Jensen", "givenName": "Barbara"},
    "displayName": "Babs Jensen",
    "emails": [{"value": "bjensen@home.example.com", "type": "home"}, {"value": "bjensen@example.com", "type": "work"}],
    "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
    "password": "t1meMa$heen",
    "active": True,
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Tour Operations"},
}


def test_create_a_user_as_rfc_7644_shows(idp, provisioner):
    response = idp.post("/Users", RFC_USER)

    assert response.status_code == 201, response.content
    user = User.objects.get(username="bjensen")
    body = response.json()
    assert body["id"] == str(user.pk)
    assert response["Location"] == f"http://testserver/scim/v2/Users/{user.pk}" == body["meta"]["location"]
    assert body["schemas"] == [USER_SCHEMA]
    assert body["externalId"] == "00u1a2b3c4"
    assert body["name"]["givenName"] == "Barbara" and body["name"]["familyName"] == "Jensen"
    assert body["emails"] == [{"value": "bjensen@example.com", "type": "work", "primary": True}]
    assert body["active"] is True
    assert body["groups"] == []
    assert (user.external_id, user.first_name, user.last_name, user.email) == (
        "00u1a2b3c4",
        "Barbara",
        "Jensen",
        "bjensen@example.com",
    )
    # People provisioned by the provider sign in through it: the password sent is never kept.
    assert not user.has_usable_password()
    event = AuditEvent.objects.get(action="scim.user_created")
    assert event.actor_username == "okta-scim"
    assert event.target_id == str(user.pk)
    assert event.data == {"userName": "bjensen", "externalId": "00u1a2b3c4", "active": True}
    assert "t1meMa$heen" not in json.dumps(event.data)


def test_creating_a_taken_username_is_a_409_uniqueness_in_any_case(idp, requester):
    before = database_state()

    body = scim_error(idp.post("/Users", {"schemas": [USER_SCHEMA], "userName": "ALICE"}), 409, "uniqueness")

    assert "ALICE" in body["detail"]
    assert database_state() == before


def test_creating_a_taken_external_id_is_a_409(idp):
    assert idp.post("/Users", {"userName": "one", "externalId": "ext-1"}).status_code == 201
    before = database_state()

    scim_error(idp.post("/Users", {"userName": "two", "externalId": "ext-1"}), 409, "uniqueness")

    assert database_state() == before


@pytest.mark.parametrize(
    ("body", "scim_type", "named"),
    [
        ({"schemas": [USER_SCHEMA]}, "invalidValue", "userName"),
        ({"userName": ""}, "invalidValue", "userName"),
        ({"userName": "has space"}, "invalidValue", "userName"),
        ({"userName": "x" * 151}, "invalidValue", "userName"),
        ({"userName": "ok", "active": "maybe"}, "invalidValue", "active"),
        ({"userName": "ok", "emails": "a@b.c"}, "invalidValue", "emails"),
        ({"userName": "ok", "name": "Barbara"}, "invalidValue", "name"),
        ({"userName": "ok", "externalId": 42}, "invalidValue", "externalId"),
        ({"userName": "ok", "externalId": "e" * 256}, "invalidValue", "externalId"),
        ({"userName": "ok", "favouriteColour": "blue"}, "invalidPath", "favouritecolour"),
        ([{"userName": "ok"}], "invalidSyntax", "object"),
    ],
)
def test_a_bad_user_body_is_a_400_naming_the_attribute_and_creates_nothing(idp, body, scim_type, named):
    before = database_state()

    error = scim_error(idp.post("/Users", body), 400, scim_type)

    assert named in error["detail"]
    assert database_state() == before


def test_a_body_that_is_not_json_is_a_400_invalid_syntax(idp):
    before = database_state()

    response = idp.client.post(f"{BASE}/Users", data="{not json", content_type=SCIM_JSON)

    scim_error(response, 400, "invalidSyntax")
    assert database_state() == before


# --- users: read and list -----------------------------------------------------------------------


def test_get_a_user_by_id_with_their_groups(idp, requester):
    response = idp.get(f"/Users/{requester.pk}")

    assert response.status_code == 200
    body = response.json()
    assert body["userName"] == "alice"
    engineers = Group.objects.get(name="engineers")
    assert body["groups"] == [
        {"value": str(engineers.pk), "display": "engineers", "$ref": f"http://testserver/scim/v2/Groups/{engineers.pk}"}
    ]
    scim_error(idp.get("/Users/999999"), 404)
    scim_error(idp.get("/Users/not-a-number"), 404)
    # A digit to str.isdigit() that int() refuses: still a 404, not a server error.
    scim_error(idp.get("/Users/\u00b2"), 404)
    assert idp.get("/Users", filter='id eq "\u00b2"').json()["totalResults"] == 0
    assert idp.get("/Users", filter=f'id eq "{requester.pk}"').json()["Resources"][0]["userName"] == "alice"


def test_filter_by_username_as_okta_and_entra_do_before_creating(idp, requester, outsider):
    found = idp.get("/Users", filter='userName eq "Alice"', startIndex=1, count=100).json()
    missing = idp.get("/Users", filter='userName eq "5f2c8ad4-no-such-user"').json()
    by_external = idp.get("/Users", filter='externalId eq "none"').json()

    assert found["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]
    assert found["totalResults"] == 1
    assert [u["userName"] for u in found["Resources"]] == ["alice"]
    assert (missing["totalResults"], missing["Resources"]) == (0, [])
    assert by_external["totalResults"] == 0


def test_filter_by_external_id_is_case_exact(idp):
    idp.post("/Users", {"userName": "dana", "externalId": "AbC-1"})

    assert idp.get("/Users", filter='externalId eq "AbC-1"').json()["totalResults"] == 1
    assert idp.get("/Users", filter='externalId eq "abc-1"').json()["totalResults"] == 0


@pytest.mark.parametrize(
    "expression",
    ['userName co "ali"', 'userName eq "alice" and active eq true', "userName eq alice", 'title eq "x"', ""],
)
def test_a_filter_beyond_one_equality_is_a_400_invalid_filter(idp, requester, expression):
    scim_error(idp.get("/Users", filter=expression), 400, "invalidFilter")


def test_pages_by_start_index_and_count(idp):
    names = [make_user(f"u{i:02}").username for i in range(7)]
    every = [u.username for u in User.objects.order_by("pk")]

    page = idp.get("/Users", startIndex=3, count=2).json()

    assert page["totalResults"] == len(every)
    assert page["startIndex"] == 3 and page["itemsPerPage"] == 2
    assert [u["userName"] for u in page["Resources"]] == every[2:4]
    assert set(names) <= set(every)
    # RFC 7644: a startIndex below 1 is 1, a negative count is 0 (the total alone).
    assert idp.get("/Users", startIndex=0, count=1).json()["startIndex"] == 1
    assert idp.get("/Users", count=-1).json()["Resources"] == []
    scim_error(idp.get("/Users", count="many"), 400, "invalidValue")


def test_listing_users_costs_the_same_queries_for_few_and_many(idp):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert idp.get("/Users", count=200).status_code == 200
        return len(captured)

    for i in range(3):
        make_user(f"few{i}", groups=("engineers", "sre-leads"))
    few = queries()
    for i in range(30):
        make_user(f"many{i}", groups=("engineers", "security", f"team-{i}"))
    many = queries()

    assert few == many
    assert many <= 6


def test_listing_groups_with_members_costs_the_same_queries_for_few_and_many(idp):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert idp.get("/Groups").status_code == 200
        return len(captured)

    make_user("first", groups=("engineers",))
    few = queries()
    for i in range(30):
        make_user(f"many{i}", groups=("engineers", f"team-{i}"))
    many = queries()

    assert few == many


# --- users: PUT, PATCH, DELETE ------------------------------------------------------------------


def test_put_replaces_the_user_and_records_what_changed(idp, requester):
    response = idp.put(
        f"/Users/{requester.pk}",
        {
            "schemas": [USER_SCHEMA],
            "id": str(requester.pk),
            "userName": "alice.smith",
            "externalId": "00u-alice",
            "name": {"givenName": "Alice", "familyName": "Smith"},
            "emails": [{"value": "alice.smith@example.com", "primary": True}],
            "active": True,
        },
    )

    assert response.status_code == 200, response.content
    user = User.objects.get(pk=requester.pk)
    assert (user.username, user.external_id, user.first_name, user.last_name, user.email) == (
        "alice.smith",
        "00u-alice",
        "Alice",
        "Smith",
        "alice.smith@example.com",
    )
    event = AuditEvent.objects.get(action="scim.user_updated")
    assert event.data["changes"]["username"] == ["alice", "alice.smith"]
    assert set(event.data["changes"]) == {"username", "external_id", "first_name", "last_name", "email"}


def test_put_leaving_out_active_and_external_id_keeps_them(idp):
    created = idp.post("/Users", {"userName": "dana", "externalId": "ext-d", "active": False}).json()

    idp.put(f"/Users/{created['id']}", {"userName": "dana", "name": {"givenName": "Dana"}})

    user = User.objects.get(pk=created["id"])
    assert (user.is_active, user.external_id, user.first_name) == (False, "ext-d", "Dana")


def test_put_with_another_id_is_a_400_mutability(idp, requester, outsider):
    before = database_state()

    scim_error(idp.put(f"/Users/{requester.pk}", {"id": str(outsider.pk), "userName": "alice"}), 400, "mutability")

    assert database_state() == before


def test_okta_deactivates_with_a_replace_of_an_object(idp, requester):
    response = idp.patch(f"/Users/{requester.pk}", {"op": "replace", "value": {"active": False}})

    assert response.status_code == 200, response.content
    assert response.json()["active"] is False
    assert User.objects.get(pk=requester.pk).is_active is False
    event = AuditEvent.objects.get(action="scim.user_deactivated")
    assert (event.actor_username, event.target_id) == ("okta-scim", str(requester.pk))
    assert event.data["changes"] == {"is_active": [True, False]}


def test_entra_deactivates_with_a_capitalised_op_and_a_string_boolean(idp, requester):
    response = idp.patch(f"/Users/{requester.pk}", {"op": "Replace", "path": "active", "value": "False"})

    assert response.status_code == 200, response.content
    assert User.objects.get(pk=requester.pk).is_active is False
    assert AuditEvent.objects.filter(action="scim.user_deactivated").count() == 1

    idp.patch(f"/Users/{requester.pk}", {"op": "Replace", "path": "active", "value": "True"})

    assert User.objects.get(pk=requester.pk).is_active is True
    assert AuditEvent.objects.get(action="scim.user_updated").data["changes"] == {"is_active": [False, True]}


def test_entra_updates_with_filtered_and_dotted_paths(idp, requester):
    response = idp.patch(
        f"/Users/{requester.pk}",
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "alice@corp.example"},
        {"op": "Replace", "path": "name.familyName", "value": "Liddell"},
        {"op": "Add", "path": "externalId", "value": "8c1f-entra"},
        {"op": "Add", "value": {"name.givenName": "Alice", "title": "Engineer"}},
        {"op": "Replace", "path": 'emails[type eq "home"].value', "value": "ignored@home.example"},
        {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"},
    )

    assert response.status_code == 200, response.content
    user = User.objects.get(pk=requester.pk)
    assert (user.email, user.first_name, user.last_name, user.external_id) == (
        "alice@corp.example",
        "Alice",
        "Liddell",
        "8c1f-entra",
    )
    assert AuditEvent.objects.filter(action="scim.user_updated").count() == 1


def test_rfc_style_patch_with_core_schema_qualified_path_and_remove(idp, requester):
    idp.patch(f"/Users/{requester.pk}", {"op": "add", "path": "externalId", "value": "ext-a"})

    response = idp.patch(
        f"/Users/{requester.pk}",
        {"op": "replace", "path": f"{USER_SCHEMA}:userName", "value": "alice2"},
        {"op": "remove", "path": "externalId"},
    )

    assert response.status_code == 200, response.content
    user = User.objects.get(pk=requester.pk)
    assert (user.username, user.external_id) == ("alice2", "")


@pytest.mark.parametrize(
    ("operation", "scim_type"),
    [
        ({"op": "replace", "path": "active", "value": "nope"}, "invalidValue"),
        ({"op": "replace", "path": "shoeSize", "value": 9}, "invalidPath"),
        ({"op": "remove"}, "noTarget"),
        ({"op": "remove", "path": "userName"}, "mutability"),
        ({"op": "add", "path": "groups", "value": [{"value": "1"}]}, "mutability"),
        ({"op": "replace", "path": "id", "value": "123456"}, "mutability"),
        ({"op": "move", "path": "active", "value": False}, "invalidSyntax"),
        ({"op": "replace", "path": "active"}, "invalidValue"),
        ({"op": "replace", "value": [1, 2]}, "invalidValue"),
        ({"op": "replace", "path": "userName", "value": "bob"}, "uniqueness"),
    ],
)
def test_a_bad_operation_anywhere_in_a_patch_changes_nothing(idp, requester, reviewer, operation, scim_type):
    before = database_state()

    response = idp.patch(
        f"/Users/{requester.pk}",
        {"op": "replace", "path": "active", "value": False},  # valid, and must not happen alone
        operation,
    )

    scim_error(response, 409 if scim_type == "uniqueness" else 400, scim_type)
    assert database_state() == before
    assert User.objects.get(pk=requester.pk).is_active is True


@pytest.mark.parametrize(
    "body",
    [
        {"Operations": []},
        {"schemas": ["urn:wrong"], "Operations": [{"op": "replace", "path": "active", "value": False}]},
        {"Operations": [{"op": "replace", "path": "active", "value": False, "extra": 1}]},
        {"Operations": [{"op": "replace", "path": "active", "value": False}], "comment": "x"},
    ],
)
def test_a_malformed_patch_body_is_a_400_invalid_syntax(idp, requester, body):
    before = database_state()

    scim_error(idp.call("patch", f"/Users/{requester.pk}", body), 400, "invalidSyntax")

    assert database_state() == before


def test_delete_deactivates_and_keeps_the_row(idp, requester):
    response = idp.delete(f"/Users/{requester.pk}")

    assert response.status_code == 204
    user = User.objects.get(pk=requester.pk)
    assert user.is_active is False
    assert user.groups.filter(name="engineers").exists()
    assert AuditEvent.objects.filter(action="scim.user_deactivated", target_id=str(requester.pk)).count() == 1
    # Again: nothing more to change, nothing more recorded.
    assert idp.delete(f"/Users/{requester.pk}").status_code == 204
    assert AuditEvent.objects.filter(action__startswith="scim.").count() == 1
    scim_error(idp.delete("/Users/999999"), 404)


def test_a_superuser_cannot_be_changed_or_deactivated_through_scim(idp, superuser):
    before = database_state()

    scim_error(idp.delete(f"/Users/{superuser.pk}"), 403)
    scim_error(idp.patch(f"/Users/{superuser.pk}", {"op": "replace", "path": "userName", "value": "x"}), 403)
    scim_error(idp.put(f"/Users/{superuser.pk}", {"userName": "root", "emails": [{"value": "a@evil.example"}]}), 403)

    assert database_state() == before


# --- groups ---------------------------------------------------------------------------------------


def test_groups_are_listed_and_found_by_display_name(idp, requester, reviewer):
    engineers = Group.objects.get(name="engineers")

    found = idp.get("/Groups", filter='displayName eq "Engineers"').json()
    lean = idp.get("/Groups", filter='displayName eq "engineers"', excludedAttributes="members").json()

    assert found["totalResults"] == 1
    group = found["Resources"][0]
    assert (group["id"], group["displayName"]) == (str(engineers.pk), "engineers")
    assert group["members"] == [
        {"value": str(requester.pk), "display": "alice", "$ref": f"http://testserver/scim/v2/Users/{requester.pk}"}
    ]
    assert "members" not in lean["Resources"][0]
    assert idp.get(f"/Groups/{engineers.pk}").json()["displayName"] == "engineers"
    scim_error(idp.get("/Groups", filter='members eq "1"'), 400, "invalidFilter")


def test_creating_a_group_is_refused_portal_groups_come_from_the_policy_file(idp, engineers):
    before = (database_state(), Group.objects.count())

    unknown = scim_error(idp.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "contractors"}), 403)
    existing = scim_error(
        idp.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "Engineers"}), 409, "uniqueness"
    )
    scim_error(idp.delete(f"/Groups/{engineers.pk}"), 403)

    assert "policy file" in unknown["detail"]
    assert "filter=displayName eq" in existing["detail"]
    assert (database_state(), Group.objects.count()) == before


def test_okta_adds_and_removes_members_by_filtered_path(idp, engineers, outsider, requester):
    added = idp.patch(
        f"/Groups/{engineers.pk}",
        {"op": "add", "path": "members", "value": [{"value": str(outsider.pk), "display": "mallory"}]},
    )
    assert added.status_code == 200, added.content
    assert {m["display"] for m in added.json()["members"]} == {"alice", "mallory"}

    removed = idp.patch(f"/Groups/{engineers.pk}", {"op": "remove", "path": f'members[value eq "{requester.pk}"]'})

    assert removed.status_code == 200, removed.content
    assert set(engineers.user_set.values_list("username", flat=True)) == {"mallory"}
    events = AuditEvent.objects.filter(action__startswith="scim.group_").order_by("id")
    assert [(e.action, e.data["userName"], e.target_id) for e in events] == [
        ("scim.group_member_added", "mallory", str(engineers.pk)),
        ("scim.group_member_removed", "alice", str(engineers.pk)),
    ]
    assert {e.actor_username for e in events} == {"okta-scim"}


def test_entra_adds_and_removes_members_with_values(idp, engineers, outsider, requester):
    idp.patch(f"/Groups/{engineers.pk}", {"op": "Add", "path": "members", "value": [{"value": str(outsider.pk)}]})
    response = idp.patch(
        f"/Groups/{engineers.pk}", {"op": "Remove", "path": "members", "value": [{"value": str(requester.pk)}]}
    )

    assert response.status_code == 200, response.content
    assert list(engineers.user_set.values_list("username", flat=True)) == ["mallory"]


def test_okta_replace_with_id_and_name_restated_and_members(idp, engineers, outsider, requester):
    response = idp.patch(
        f"/Groups/{engineers.pk}",
        {
            "op": "replace",
            "value": {"id": str(engineers.pk), "displayName": "engineers", "members": [{"value": str(outsider.pk)}]},
        },
    )

    assert response.status_code == 200, response.content
    assert list(engineers.user_set.values_list("username", flat=True)) == ["mallory"]
    assert sorted(AuditEvent.objects.filter(action__startswith="scim.group_").values_list("action", flat=True)) == [
        "scim.group_member_added",
        "scim.group_member_removed",
    ]


def test_put_sets_the_members_exactly(idp, engineers, outsider, requester):
    response = idp.put(
        f"/Groups/{engineers.pk}",
        {"schemas": [GROUP_SCHEMA], "displayName": "engineers", "members": [{"value": str(outsider.pk)}]},
    )

    assert response.status_code == 200, response.content
    assert list(engineers.user_set.values_list("username", flat=True)) == ["mallory"]


def test_adding_someone_already_in_or_removing_someone_not_in_records_nothing(idp, engineers, requester, outsider):
    idp.patch(f"/Groups/{engineers.pk}", {"op": "add", "path": "members", "value": [{"value": str(requester.pk)}]})
    idp.patch(f"/Groups/{engineers.pk}", {"op": "remove", "path": f'members[value eq "{outsider.pk}"]'})

    assert not AuditEvent.objects.filter(action__startswith="scim.").exists()


@pytest.mark.parametrize(
    ("operation", "scim_type"),
    [
        ({"op": "add", "path": "members", "value": [{"value": "999999"}]}, "invalidValue"),
        ({"op": "add", "path": "members", "value": [{"value": "mallory"}]}, "invalidValue"),
        ({"op": "add", "path": "members", "value": [{"value": "\u00b2"}]}, "invalidValue"),
        ({"op": "add", "path": "members", "value": [{"value": True}]}, "invalidValue"),
        ({"op": "add", "path": "members", "value": {"value": "1"}}, "invalidValue"),
        ({"op": "replace", "path": "displayName", "value": "admins"}, "mutability"),
        ({"op": "replace", "value": {"displayName": "admins"}}, "mutability"),
        ({"op": "add", "path": 'members[value eq "1"]', "value": [{"value": "1"}]}, "invalidPath"),
        ({"op": "remove", "path": "owner"}, "invalidPath"),
        ({"op": "replace", "path": "id", "value": "123456"}, "mutability"),
    ],
)
def test_a_bad_group_operation_changes_no_membership(idp, engineers, requester, outsider, operation, scim_type):
    before = database_state()

    response = idp.patch(
        f"/Groups/{engineers.pk}",
        {"op": "add", "path": "members", "value": [{"value": str(outsider.pk)}]},  # must not happen alone
        operation,
    )

    scim_error(response, 400, scim_type)
    assert database_state() == before


def test_an_unknown_group_is_a_404(idp):
    scim_error(idp.get("/Groups/999999"), 404)
    scim_error(idp.patch("/Groups/999999", {"op": "remove", "path": "members"}), 404)


def test_the_admin_finds_a_user_by_the_providers_id(idp, superuser):
    idp.post("/Users", {"userName": "dana", "externalId": "00u-dana-okta"})
    make_user("other")
    admin = Client()
    admin.force_login(superuser)

    listing = admin.get("/admin/accounts/user/", {"q": "00u-dana"})
    page = admin.get(f"/admin/accounts/user/{User.objects.get(username='dana').pk}/change/")

    assert listing.status_code == 200
    assert [row.username for row in listing.context["cl"].result_list] == ["dana"]
    assert 'value="00u-dana-okta"' in page.content.decode()


def test_rfc_replace_of_members_by_path_and_removal_of_all(idp, engineers, requester, outsider, reviewer):
    """RFC 7644 3.5.2.3 and 3.5.2.2: ``replace`` on ``members`` sets them; ``remove`` without a value empties."""
    replaced = idp.patch(
        f"/Groups/{engineers.pk}",
        {
            "op": "replace",
            "path": "members",
            "value": [
                {"display": "mallory", "$ref": f"https://idp.example/Users/{outsider.pk}", "value": str(outsider.pk)},
                {"display": "bob", "value": str(reviewer.pk)},
            ],
        },
    )
    assert replaced.status_code == 200, replaced.content
    assert set(engineers.user_set.values_list("username", flat=True)) == {"mallory", "bob"}

    emptied = idp.patch(f"/Groups/{engineers.pk}", {"op": "remove", "path": "members"})

    assert emptied.status_code == 200, emptied.content
    assert emptied.json()["members"] == []
    assert not engineers.user_set.exists()
    removed = AuditEvent.objects.filter(action="scim.group_member_removed")
    assert sorted(removed.values_list("data__userName", flat=True)) == ["alice", "bob", "mallory"]
