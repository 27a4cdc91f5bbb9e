"""Who may do what: every API endpoint and admin page against every persona, one cell each.

Personas (``PERSONAS``): nobody signed in; alice, who requested access
(engineers); eve, a peer engineer; dan, who reviews another role (prod-db);
bob, who reviews prod-ssh; erin, who holds ``audit`` through the security
group; ray, who holds ``revoke``; stella, staff and nothing else; root, a
superuser; and hal, a host agent's account holding ``check_access``.

Each row of ``API`` and ``ADMIN`` names a call and the status every persona
gets. A call that changes something also names who changes it (``effect``):
for everyone else the same call must leave the database as it was. One test
per row sets the world up once and makes the call as each persona in turn,
each inside a savepoint that is rolled back, and compares the whole row, so a
failure shows every cell that differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import ApiToken, User
from audit.models import AuditEvent
from requests_app.credentials.certificates import certificate_issue
from requests_app.models import (
    AccessRequest,
    Grant,
    IssuedCertificate,
    Notification,
    NotificationChannel,
    Review,
    SSHCertificateAuthority,
)
from requests_app.notifications.messages import Event
from requests_app.services import request_create, request_review
from tests.conftest import give_capabilities, make_resource, make_role, make_user
from tests.ssh.keys import ed25519_key, openssh_public

pytestmark = pytest.mark.django_db

PERSONAS = [
    "anonymous",
    "requester",
    "peer",
    "other_reviewer",
    "reviewer",
    "auditor",
    "revoker",
    "staff",
    "superuser",
    "checker",
]
SIGNED_IN = PERSONAS[1:]


def everyone(status: int, **overrides: int) -> dict[str, int]:
    """``status`` for every persona but those named."""
    unknown = set(overrides) - set(PERSONAS)
    assert not unknown, unknown
    return {p: overrides.get(p, status) for p in PERSONAS}


@dataclass
class World:
    users: dict[str, User]
    pending: AccessRequest  # alice's prod-ssh request, waiting for bob
    approved: AccessRequest  # alice's earlier prod-ssh request, approved by bob
    grant: Grant  # the approved request's live grant on web-1
    db_request: AccessRequest  # alice's prod-db request, for dan
    objects: dict[type, object] = field(default_factory=dict)


@pytest.fixture
def world(db) -> World:
    prod_ssh = make_role("prod-ssh", reviewers=("sre-leads",), max_duration=timedelta(hours=2))
    prod_db = make_role("prod-db", resource_kinds=["db"], reviewers=("dba",))
    web1 = make_resource("web-1", labels={"env": "prod"})
    orders = make_resource("orders", kind="db", labels={"env": "prod"})
    users = {
        "requester": make_user("alice", groups=("engineers",)),
        "peer": make_user("eve", groups=("engineers",)),
        "other_reviewer": make_user("dan", groups=("dba",)),
        "reviewer": make_user("bob", groups=("sre-leads",)),
        "auditor": make_user("erin", groups=("security",)),
        "revoker": give_capabilities(make_user("ray"), "revoke"),
        "staff": make_user("stella", is_staff=True),
        "superuser": make_user("root", is_staff=True, is_superuser=True),
        "checker": give_capabilities(make_user("hal"), "check_access"),
    }
    give_capabilities(Group.objects.get(name="security"), "audit")
    alice, bob = users["requester"], users["reviewer"]
    approved = request_create(requester=alice, resources=[web1], reason="INC-1")
    request_review(request=approved, reviewer=bob, decision="approve", reason="ok")
    grant = approved.grants.get()
    pending = request_create(requester=alice, resources=[web1], roles=[prod_ssh], reason="INC-2")
    db_request = request_create(requester=alice, resources=[orders], roles=[prod_db], reason="INC-3")
    certificate_issue(grant=grant, user=alice, public_key=openssh_public(ed25519_key()))
    channel = NotificationChannel.objects.create(name="room", kind=NotificationChannel.Kind.EMAIL, events=["x"])
    token, _ = ApiToken.objects.create(user=alice, name="laptop")
    objects = {
        AccessRequest: pending,
        Review: approved.reviews.get(),
        Grant: grant,
        AuditEvent: AuditEvent.objects.order_by("id").first(),
        IssuedCertificate: IssuedCertificate.objects.get(),
        SSHCertificateAuthority: SSHCertificateAuthority.objects.get(),
        NotificationChannel: channel,
        Notification: Notification.objects.create(
            channel=channel, event=Event.REQUEST_CREATED, subject_key=f"request:{pending.pk}", payload={}
        ),
        User: bob,
        Group: Group.objects.get(name="sre-leads"),
        ApiToken: token,
        type(prod_ssh): prod_ssh,
        type(web1): web1,
    }
    return World(users, pending, approved, grant, db_request, objects)


def each_persona(run) -> dict[str, object]:
    """``run(persona)`` for every persona, each in a savepoint rolled back afterwards."""
    out = {}
    for persona in PERSONAS:
        with transaction.atomic():
            out[persona] = run(persona)
            transaction.set_rollback(True)
    return out


def api_client(world: World, persona: str) -> APIClient:
    client = APIClient()
    if persona != "anonymous":
        # A fresh object, as each real request loads its user: no permission cache carried over.
        client.force_authenticate(User.objects.get(pk=world.users[persona].pk))
    return client


def admin_client(world: World, persona: str) -> Client:
    client = Client()
    if persona != "anonymous":
        client.force_login(world.users[persona])
    return client


# --- the API ------------------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str  # formatted with the world: {pending}, {grant}, {event}
    expected: dict[str, int]
    body: dict | None = None
    effect: object = None  # world -> bool: did the call change what it is about?
    changes_for: frozenset[str] = frozenset()

    def url(self, world: World) -> str:
        return self.path.format(
            pending=world.pending.pk,
            grant=world.grant.pk,
            event=world.objects[AuditEvent].pk,
            web1=world.grant.resource_id,
            bob=world.users["reviewer"].pk,
        )


def _reviewed(world: World) -> bool:
    return Review.objects.filter(request=world.pending).exists()


def _cancelled(world: World) -> bool:
    return AccessRequest.objects.get(pk=world.pending.pk).state == AccessRequest.State.CANCELLED


def _revoked(world: World) -> bool:
    return Grant.objects.get(pk=world.grant.pk).revoked_at is not None


def _deactivated(world: World) -> bool:
    return not User.objects.get(pk=world.users["reviewer"].pk).is_active


def _created(world: World) -> bool:
    return AccessRequest.objects.count() > 3


# Seen by whom: the requester's own; bob (reviews prod-ssh) the pending one; auditors and superusers all.
REQUEST_DETAIL = everyone(404, anonymous=401, requester=200, reviewer=200, auditor=200, superuser=200)
# Grants: the owner's own; everyone's for audit and revoke.
GRANT_DETAIL = everyone(404, anonymous=401, requester=200, auditor=200, revoker=200, superuser=200)
AUDIT_ONLY = everyone(403, anonymous=401, auditor=200, superuser=200)
CHECK_ACCESS_ONLY = everyone(403, anonymous=401, checker=200, superuser=200)

API = {
    "me": Call("get", "/api/v1/me/", everyone(200, anonymous=401)),
    "resources": Call("get", "/api/v1/resources/", everyone(200, anonymous=401)),
    "roles": Call("get", "/api/v1/roles/", everyone(200, anonymous=401)),
    "requests list": Call("get", "/api/v1/requests/", everyone(200, anonymous=401)),
    "request detail": Call("get", "/api/v1/requests/{pending}/", REQUEST_DETAIL),
    "request create": Call(
        "post",
        "/api/v1/requests/",
        # Only engineers may request prod-ssh; nobody else may, whatever else they hold.
        everyone(400, anonymous=401, requester=201, peer=201),
        body={"resources": ["node/web-1"], "reason": "INC-9"},
        effect=_created,
        changes_for=frozenset({"requester", "peer"}),
    ),
    "review": Call(
        "post",
        "/api/v1/requests/{pending}/reviews/",
        # Refusals are audited; who may see the request is told why (403), the others get the
        # answer for a missing request (404).
        everyone(404, anonymous=401, reviewer=201, requester=403, auditor=403, superuser=403),
        body={"decision": "approve", "reason": "ok"},
        effect=_reviewed,
        changes_for=frozenset({"reviewer"}),
    ),
    "cancel": Call(
        "post",
        "/api/v1/requests/{pending}/cancel/",
        {**REQUEST_DETAIL, "requester": 200, "reviewer": 403, "auditor": 403, "superuser": 403},
        body={},
        effect=_cancelled,
        changes_for=frozenset({"requester"}),
    ),
    "grants list": Call("get", "/api/v1/grants/", everyone(200, anonymous=401)),
    "grant detail": Call("get", "/api/v1/grants/{grant}/", GRANT_DETAIL),
    "revoke": Call(
        "post",
        "/api/v1/grants/{grant}/revoke/",
        {**GRANT_DETAIL, "requester": 403, "auditor": 403},
        body={"reason": "incident over"},
        effect=_revoked,
        changes_for=frozenset({"revoker", "superuser"}),
    ),
    "certificate": Call(
        "post",
        "/api/v1/grants/{grant}/certificate/",
        # The owner gets past every permission to the key check; whoever else sees the grant gets a 403.
        {**GRANT_DETAIL, "requester": 400, "auditor": 403, "revoker": 403, "superuser": 403},
        body={"public_key": "not a key"},
    ),
    "access check, self": Call("get", "/api/v1/access-check/?resource=node/web-1", everyone(200, anonymous=401)),
    "access check, another user": Call(
        "get", "/api/v1/access-check/?resource=node/web-1&user=alice", {**CHECK_ACCESS_ONLY, "requester": 200}
    ),
    "ssh principals": Call("get", "/api/v1/resources/{web1}/ssh-principals/", CHECK_ACCESS_ONLY),
    "revoked keys": Call("get", "/api/v1/ssh/revoked-keys/", CHECK_ACCESS_ONLY),
    "ssh ca": Call("get", "/api/v1/ca/ssh/", everyone(200)),
    "audit list": Call("get", "/api/v1/audit/", AUDIT_ONLY),
    "audit detail": Call("get", "/api/v1/audit/{event}/", AUDIT_ONLY),
    "schema": Call("get", "/api/schema/", everyone(200)),
    "scim users": Call("get", "/scim/v2/Users", everyone(403, anonymous=401, superuser=200)),
    "scim deactivate": Call(
        "patch",
        "/scim/v2/Users/{bob}",
        everyone(403, anonymous=401, superuser=200),
        body={"Operations": [{"op": "replace", "path": "active", "value": False}]},
        effect=_deactivated,
        changes_for=frozenset({"superuser"}),
    ),
}

REFUSALS = {
    "audit list": "You need the audit capability.",
    "audit detail": "You need the audit capability.",
    "revoke": "You need the revoke capability.",
    "access check, another user": "You need the check_access capability.",
    "ssh principals": "You need the check_access capability.",
    "revoked keys": "You need the check_access capability.",
    "scim users": "You need the scim capability.",
    "scim deactivate": "You need the scim capability.",
}


@pytest.mark.parametrize("name", list(API))
def test_api(world, name):
    call = API[name]
    if call.effect:
        assert not call.effect(world)

    def run(persona):
        response = getattr(api_client(world, persona), call.method)(
            call.url(world), call.body, format="json", HTTP_ACCEPT="application/json"
        )
        refusal = response.json().get("detail") if response.status_code == 403 else None
        return response.status_code, refusal, call.effect(world) if call.effect else False

    got = each_persona(run)

    assert {p: status for p, (status, _, _) in got.items()} == call.expected
    assert {p for p, (_, _, changed) in got.items() if changed} == call.changes_for
    if name in REFUSALS:
        assert {refusal for status, refusal, _ in got.values() if status == 403} == {REFUSALS[name]}


# What each list holds for each persona: (requests, grants).
LIST_ROWS = {
    "requester": (3, 1),
    "peer": (0, 0),
    "other_reviewer": (1, 0),  # the prod-db request
    "reviewer": (2, 0),  # both prod-ssh requests; grants are not a reviewer's
    "auditor": (3, 1),
    "revoker": (0, 1),  # every grant, to end one; no requests
    "staff": (0, 0),
    "superuser": (3, 1),
    "checker": (0, 0),
}


def test_api_lists_hold_what_each_may_see(world):
    def rows(persona):
        client = api_client(world, persona)
        return client.get("/api/v1/requests/").json()["count"], client.get("/api/v1/grants/").json()["count"]

    assert {p: rows(p) for p in SIGNED_IN} == LIST_ROWS


# --- the admin ----------------------------------------------------------------------------------

# Status codes in the admin: 200 shown; 302 sent to the sign-in page (not signed in, or nothing
# to do in the admin), or, for a change page of a row the persona may not see, to the index; 403
# signed in to the admin but not allowed this page.
IN_ADMIN = ("other_reviewer", "reviewer", "auditor", "revoker", "staff", "superuser")


def admin_only(*allowed: str, hidden: tuple[str, ...] = ()) -> dict[str, int]:
    """200 for ``allowed``, 403 for the others who may enter the admin, 302 for the rest."""
    out = everyone(302)
    for persona in IN_ADMIN:
        out[persona] = 200 if persona in allowed else 403
    for persona in hidden:
        out[persona] = 302
    return out


ADMIN_MODELS = {
    # model: who may see its list and its change page (and who sees the list but not this row)
    AccessRequest: (("other_reviewer", "reviewer", "auditor", "superuser"), ("other_reviewer",)),
    Review: (("auditor", "superuser"), ()),
    Grant: (("auditor", "revoker", "superuser"), ()),
    AuditEvent: (("auditor", "superuser"), ()),
    IssuedCertificate: (("auditor", "superuser"), ()),
    SSHCertificateAuthority: (("auditor", "superuser"), ()),
    Notification: (("auditor", "staff", "superuser"), ()),
    NotificationChannel: (("auditor", "staff", "superuser"), ()),
    User: (("superuser",), ()),
    Group: (("superuser",), ()),
    ApiToken: (("superuser",), ()),
}


def _admin_rows() -> dict[str, tuple[str, dict[str, int]]]:
    from accounts.models import Role
    from inventory.models import Resource

    models = {**ADMIN_MODELS, Role: (("staff", "superuser"), ()), Resource: (("staff", "superuser"), ())}
    rows: dict[str, tuple[str, dict[str, int]]] = {"index": ("admin:index", admin_only(*IN_ADMIN))}
    for model, (allowed, hidden) in models.items():
        label = f"{model._meta.app_label}_{model._meta.model_name}"
        rows[f"{model.__name__} list"] = (f"admin:{label}_changelist", admin_only(*allowed))
        rows[f"{model.__name__} page"] = (f"admin:{label}_change", admin_only(*allowed, hidden=hidden))
    for model in (Role, Resource, NotificationChannel):
        rows[f"{model.__name__} add"] = (
            f"admin:{model._meta.app_label}_{model._meta.model_name}_add",
            admin_only("staff", "superuser"),
        )
    for model in (AccessRequest, Grant, AuditEvent):
        rows[f"{model.__name__} add"] = (
            f"admin:{model._meta.app_label}_{model._meta.model_name}_add",
            admin_only(),  # history is never written here, superusers included
        )
    return rows


ADMIN = _admin_rows()


@pytest.mark.parametrize("name", list(ADMIN))
def test_admin_page(world, name):
    url_name, expected = ADMIN[name]
    model = next((m for m in world.objects if f"{m.__name__} page" == name), None)
    url = reverse(url_name, args=[world.objects[model].pk] if model else [])

    def run(persona):
        response = admin_client(world, persona).get(url)
        return response.status_code, response.get("Location", "")

    got = each_persona(run)

    assert {p: status for p, (status, _) in got.items()} == expected
    login = reverse("admin:login")
    assert all(location.startswith(login) for p, (_, location) in got.items() if p not in IN_ADMIN)


def test_the_admin_index_lists_only_what_each_may_open(world):
    listed = {}
    for persona in IN_ADMIN:
        response = admin_client(world, persona).get(reverse("admin:index"))
        listed[persona] = {m["object_name"] for app in response.context["app_list"] for m in app["models"]}
    assert listed == {
        "other_reviewer": {"AccessRequest"},
        "reviewer": {"AccessRequest"},
        "auditor": {
            "AccessRequest",
            "Review",
            "Grant",
            "AuditEvent",
            "IssuedCertificate",
            "SSHCertificateAuthority",
            "Notification",
            "NotificationChannel",
        },
        "revoker": {"Grant"},
        "staff": {"Role", "Resource", "Notification", "NotificationChannel"},
        "superuser": {m.__name__ for m in ADMIN_MODELS} | {"Role", "Resource", "AccessAttempt"},
    }


QUEUE = reverse("admin:requests_app_accessrequest_changelist")


def test_admin_queue_shows_each_what_they_may_review(world):
    def run(persona):
        response = admin_client(world, persona).get(QUEUE)
        if response.status_code != 200:
            return response.status_code
        return {r.pk for r in response.context["cl"].result_list}

    assert each_persona(run) == {
        **everyone(302),
        "revoker": 403,
        "staff": 403,
        "other_reviewer": {world.db_request.pk},
        "reviewer": {world.pending.pk},
        # In no reviewer group, so no queue of their own: they start on all requests.
        "auditor": {world.pending.pk, world.approved.pk, world.db_request.pk},
        "superuser": {world.pending.pk, world.approved.pk, world.db_request.pk},
    }


REVIEW = reverse("admin:requests_app_accessrequest_review")
REVOKE = reverse("admin:requests_app_grant_revoke")
# The review page: for whoever works a queue (a reviewer group; a superuser in none has no queue).
REVIEW_PAGE = admin_only("other_reviewer", "reviewer")
REVOKE_PAGE = admin_only("revoker", "superuser")


def test_admin_review_action(world):
    ids = {"decision": "approve", "ids": [str(world.pending.pk)]}

    def run(persona):
        client = admin_client(world, persona)
        page = client.get(REVIEW, ids)
        done = client.post(REVIEW, {**ids, "reason": "ok"})
        return page.status_code, done.status_code, _reviewed(world)

    got = each_persona(run)

    assert {p: page for p, (page, _, _) in got.items()} == REVIEW_PAGE
    assert {p: done for p, (_, done, _) in got.items()} == {p: 302 if s == 200 else s for p, s in REVIEW_PAGE.items()}
    # Only an eligible reviewer's review counts: dan's is refused (for him the request does not exist).
    assert {p for p, (_, _, reviewed) in got.items() if reviewed} == {"reviewer"}


def test_admin_revoke_action(world):
    def run(persona):
        client = admin_client(world, persona)
        page = client.get(REVOKE, {"ids": [world.grant.pk]})
        done = client.post(REVOKE, {"ids": [world.grant.pk], "reason": "incident over"})
        return page.status_code, done.status_code, _revoked(world)

    got = each_persona(run)

    assert {p: page for p, (page, _, _) in got.items()} == REVOKE_PAGE
    assert {p: done for p, (_, done, _) in got.items()} == {p: 302 if s == 200 else s for p, s in REVOKE_PAGE.items()}
    assert {p for p, (_, _, revoked) in got.items() if revoked} == {"revoker", "superuser"}


def test_admin_bulk_actions_are_offered_only_to_who_may_use_them(world):
    def run(persona):
        client = admin_client(world, persona)
        offered = set()
        for response in (
            client.get(QUEUE, {"queue": "all"}),
            client.get(reverse("admin:requests_app_grant_changelist")),
        ):
            if response.status_code == 200:
                offered |= set(response.context["cl"].model_admin.get_actions(response.wsgi_request))
        return offered

    assert each_persona(run) == {
        **{p: set() for p in PERSONAS},
        # Break-glass post-review goes with reviewing: the service refuses what is not one's to review.
        "other_reviewer": {"approve_selected", "deny_selected", "ratify_selected", "reject_selected"},
        "reviewer": {"approve_selected", "deny_selected", "ratify_selected", "reject_selected"},
        "revoker": {"revoke_selected"},
        "superuser": {"revoke_selected"},
    }


# --- signing in and finding one's way ---------------------------------------------------------


def test_a_reviewer_without_the_staff_flag_signs_in_to_the_admin(world):
    client = Client()

    response = client.post(
        reverse("admin:login"), {"username": "bob", "password": "pw-correct-horse", "next": reverse("admin:index")}
    )

    assert response.status_code == 302 and response["Location"] == reverse("admin:index")
    assert client.get(reverse("admin:index")).status_code == 200


def test_someone_with_nothing_to_do_there_is_refused_by_the_admin_sign_in(world):
    client = Client()

    response = client.post(reverse("admin:login"), {"username": "alice", "password": "pw-correct-horse"})

    assert response.status_code == 200
    assert "an account that works in the admin" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_admin_refusals_name_what_is_missing(world):
    auditor = admin_client(world, "auditor")

    revoke = auditor.get(REVOKE, {"ids": [world.grant.pk]})
    review = auditor.get(REVIEW, {"decision": "approve", "ids": [str(world.pending.pk)]})

    assert revoke.status_code == 403 and "You need the revoke capability." in revoke.content.decode()
    assert review.status_code == 403 and "reviewers group" in review.content.decode()


def test_the_portal_links_each_to_their_part_of_the_admin(world):
    def link(persona):
        page = admin_client(world, persona).get(reverse("dashboard")).content.decode()
        if 'href="/admin/requests_app/accessrequest/">Review queue' in page:
            return "queue"
        return "admin" if 'href="/admin/">Admin' in page else None

    assert {p: link(p) for p in SIGNED_IN} == {
        "requester": None,
        "peer": None,
        "other_reviewer": "queue",
        "reviewer": "queue",
        "auditor": "admin",
        "revoker": "admin",
        "staff": "admin",
        "superuser": "admin",
        "checker": None,
    }


def test_the_queue_filters_offer_only_the_roles_of_requests_one_may_see(world):
    def roles_offered(persona):
        response = admin_client(world, persona).get(QUEUE, {"queue": "all"})
        spec = next(f for f in response.context["cl"].filter_specs if getattr(f, "field_path", "") == "roles")
        return {str(title) for _, title in spec.lookup_choices}

    assert roles_offered("reviewer") == {"prod-ssh"}
    assert roles_offered("other_reviewer") == {"prod-db"}
    assert roles_offered("auditor") == {"prod-ssh", "prod-db"}


@pytest.mark.parametrize(
    ("persona", "url_name", "missing"),
    [
        ("reviewer", "admin:audit_auditevent_changelist", "You need the audit capability."),
        ("revoker", "admin:requests_app_accessrequest_changelist", "You need the audit capability or to be a reviewer"),
        ("staff", "admin:requests_app_grant_changelist", "You need the audit or revoke capability."),
        ("reviewer", "admin:accounts_role_changelist", "You need the staff flag."),
        ("reviewer", "admin:requests_app_notification_changelist", "You need the audit capability or the staff flag."),
        ("auditor", "admin:accounts_user_changelist", "Only a superuser manages users, groups and API tokens."),
    ],
)
def test_an_admin_page_refused_names_what_is_missing(world, persona, url_name, missing):
    response = admin_client(world, persona).get(reverse(url_name))

    assert response.status_code == 403
    assert missing in response.content.decode()
