"""The admin: every model registered, history read-only, tokens shown once, labels kept in step."""

from __future__ import annotations

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from knox.auth import TokenAuthentication
from knox.crypto import hash_token

from accounts.models import ApiToken, Role, User
from audit.models import AuditEvent
from inventory.models import Resource, ResourceLabel
from requests_app.models import AccessRequest, Grant, Review
from requests_app.services import grant_revoke, request_create, request_review
from tests.conftest import audit_sealed_verify, make_resource, make_role, make_user

pytestmark = pytest.mark.django_db

READ_ONLY_MODELS = [AccessRequest, Review, Grant, AuditEvent]


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def approved_requests(n: int, *, requester, reviewer, role, resources) -> list[AccessRequest]:
    """``n`` approved resource-based requests, each with its reviews and grants."""
    made = []
    for _ in range(n):
        access_request = request_create(requester=requester, resources=resources, roles=[role], reason="INC-1")
        request_review(request=access_request, reviewer=reviewer, decision="approve", reason="ok")
        made.append(access_request)
    return made


@pytest.fixture
def one_step_role(db):
    return make_role("web-ssh", approvals=1)


@pytest.fixture
def data(requester, reviewer, one_step_role, web1, web2, dev1, db1):
    """Some of everything: an approved request with grants, a pending one, a token."""
    approved = approved_requests(1, requester=requester, reviewer=reviewer, role=one_step_role, resources=[web1, web2])[
        0
    ]
    pending = request_create(requester=requester, roles=[one_step_role], reason="role-based")
    token, _ = ApiToken.objects.create(user=requester, name="laptop")
    return {"approved": approved, "pending": pending, "token": token, "resource": web1, "role": one_step_role}


def object_pages(data) -> list[tuple[type, object]]:
    approved = data["approved"]
    return [
        (Resource, data["resource"]),
        (Role, data["role"]),
        (User, approved.requester),
        (ApiToken, data["token"]),
        (AccessRequest, approved),
        (AccessRequest, data["pending"]),
        (Review, approved.reviews.first()),
        (Grant, approved.grants.first()),
        (AuditEvent, AuditEvent.objects.first()),
    ]


# --- every page loads ---------------------------------------------------------------


def test_admin_index_lists_every_model(admin_client, data):
    response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    for model, _ in object_pages(data):
        assert admin_url(model, "changelist") in response.content.decode()
    assert "auditchainhead" not in response.content.decode()
    assert "resourcelabel" not in response.content.decode()


def test_every_changelist_and_change_page_loads_for_a_superuser(admin_client, data):
    for model, obj in object_pages(data):
        assert admin_client.get(admin_url(model, "changelist")).status_code == 200, model
        assert admin_client.get(admin_url(model, "change", obj.pk)).status_code == 200, model


def test_changelist_search_and_filters_load(admin_client, data):
    checks = [
        (Resource, {"q": "web", "kind__exact": "node"}),
        (Role, {"q": "web"}),
        (User, {"q": "alice"}),
        (ApiToken, {"q": "laptop", "can_check_access__exact": "0"}),
        # The superuser's list opens on their (empty) review queue; "all" is everything.
        (
            AccessRequest,
            {"queue": "all", "q": "web-1", "state__exact": "approved", "roles__id__exact": data["role"].pk},
        ),
        (Review, {"q": "bob", "decision__exact": "approve"}),
        (Grant, {"q": "alice", "state": "active"}),
        (AuditEvent, {"q": "request", "action__exact": "request.created"}),
    ]
    for model, params in checks:
        response = admin_client.get(admin_url(model, "changelist"), params)
        assert response.status_code == 200, model
        assert response.context["cl"].result_count >= 1, model


def test_request_changelist_shows_short_id_resources_and_approvals(admin_client, data):
    content = admin_client.get(admin_url(AccessRequest, "changelist"), {"queue": "all"}).content.decode()
    assert str(data["approved"].pk)[:8] in content
    assert "node/web-1, node/web-2" in content
    assert "1 of 1" in content
    assert "(role-based)" in content


def test_request_changelist_names_a_few_resources_and_counts_the_rest(admin_client, requester, reviewer, one_step_role):
    hosts = [make_resource(f"big-{i}", labels={"env": "prod"}) for i in range(5)]
    approved_requests(1, requester=requester, reviewer=reviewer, role=one_step_role, resources=hosts)
    content = admin_client.get(admin_url(AccessRequest, "changelist"), {"queue": "all"}).content.decode()
    assert "node/big-0, node/big-1, node/big-2 (+2 more)" in content


def test_grant_state_filter_reads_the_timestamps(admin_client, data):
    grant = data["approved"].grants.first()
    grant_revoke(grant=grant, by=User.objects.get(username="admin"), reason="incident over")

    def shown(state: str) -> set[int]:
        response = admin_client.get(admin_url(Grant, "changelist"), {"state": state})
        return {g.pk for g in response.context["cl"].result_list}

    others = set(data["approved"].grants.exclude(pk=grant.pk).values_list("pk", flat=True))
    assert shown("revoked") == {grant.pk}
    assert shown("active") == others
    assert shown("expired") == set()
    assert shown("scheduled") == set()


def test_resource_changelist_renders_labels(admin_client, data):
    content = admin_client.get(admin_url(Resource, "changelist")).content.decode()
    assert "env=prod, team=web" in content


# --- history is read-only, superusers included ----------------------------------------


@pytest.mark.parametrize("model", READ_ONLY_MODELS, ids=lambda m: m.__name__)
def test_superuser_cannot_add_change_or_delete_history(admin_client, data, model):
    obj = {
        AccessRequest: data["approved"],
        Review: data["approved"].reviews.first(),
        Grant: data["approved"].grants.first(),
        AuditEvent: AuditEvent.objects.first(),
    }[model]
    before = model.objects.count()
    assert admin_client.get(admin_url(model, "add")).status_code == 403
    assert admin_client.post(admin_url(model, "add"), {}).status_code == 403
    assert admin_client.post(admin_url(model, "change", obj.pk), {}).status_code == 403
    assert admin_client.get(admin_url(model, "delete", obj.pk)).status_code == 403
    assert admin_client.post(admin_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert model.objects.count() == before
    # Viewing stays possible, read-only.
    response = admin_client.get(admin_url(model, "change", obj.pk))
    assert response.status_code == 200
    assert not response.context["has_change_permission"]


@pytest.mark.parametrize("model", READ_ONLY_MODELS, ids=lambda m: m.__name__)
def test_history_changelists_offer_no_delete_action(admin_client, data, model):
    response = admin_client.get(admin_url(model, "changelist"))
    assert response.status_code == 200
    assert "delete_selected" not in response.content.decode()
    post = admin_client.post(
        admin_url(model, "changelist"),
        {"action": "delete_selected", "_selected_action": [str(o.pk) for o in model.objects.all()], "post": "yes"},
    )
    assert post.status_code in (200, 302)
    assert model.objects.exists()


def test_audit_chain_intact_after_browsing_admin(admin_client, data):
    for model, obj in object_pages(data):
        admin_client.get(admin_url(model, "change", obj.pk))
    assert audit_sealed_verify().ok


def test_auditor_reads_history_but_not_other_models(client, auditor, data):
    client.force_login(auditor)
    assert client.get(admin_url(AccessRequest, "changelist")).status_code == 200
    assert client.get(admin_url(AccessRequest, "change", data["approved"].pk)).status_code == 200
    assert client.get(admin_url(Grant, "changelist")).status_code == 200
    assert client.get(admin_url(AuditEvent, "changelist")).status_code == 200
    assert client.get(admin_url(AccessRequest, "add")).status_code == 403
    assert client.get(admin_url(Resource, "changelist")).status_code == 403
    assert client.get(admin_url(ApiToken, "changelist")).status_code == 403


# --- API tokens -----------------------------------------------------------------------


def test_token_added_in_admin_is_shown_once_and_stored_hashed(admin_client, requester):
    response = admin_client.post(
        admin_url(ApiToken, "add"),
        {"user": requester.pk, "name": "ci", "valid_for": "7", "can_check_access": "on"},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    secrets = [s for m in shown for s in re.findall(r"<code>([^<]+)</code>", m)]
    assert len(secrets) == 1
    assert any("will not be shown again" in m for m in shown)
    secret = secrets[0]

    token = ApiToken.objects.get()
    assert token.user == requester and token.name == "ci" and token.can_check_access
    assert token.digest == hash_token(secret) and token.digest != secret
    assert secret.startswith(token.token_key)
    assert 6.9 < (token.expiry - token.created).total_seconds() / 86400 <= 7
    user, auth_token = TokenAuthentication().authenticate_credentials(secret.encode())
    assert user == requester and auth_token == token

    # The change page never shows the secret nor a digest field, and lets only the name change.
    page = admin_client.get(admin_url(ApiToken, "change", token.pk))
    content = page.content.decode()
    assert secret not in content
    assert 'name="digest"' not in content
    assert set(page.context["adminform"].form.fields) == {"name"}
    assert secret not in admin_client.get(admin_url(ApiToken, "changelist")).content.decode()


def test_token_change_edits_only_the_name(admin_client, requester, outsider):
    token, _ = ApiToken.objects.create(user=requester, name="old")
    response = admin_client.post(
        admin_url(ApiToken, "change", token.pk),
        {"name": "new", "user": outsider.pk, "can_check_access": "on", "digest": "x" * 128},
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.name, token.user, token.can_check_access) == ("new", requester, False)
    assert ApiToken.objects.count() == 1


def test_revoking_tokens_deletes_and_audits_them(admin_client, requester):
    first, secret = ApiToken.objects.create(user=requester, name="a")
    second, _ = ApiToken.objects.create(user=requester, name="b")
    keep, _ = ApiToken.objects.create(user=requester, name="c")
    response = admin_client.post(
        admin_url(ApiToken, "changelist"),
        {"action": "revoke_selected", "_selected_action": [first.pk, second.pk]},
    )
    assert response.status_code == 302
    assert list(ApiToken.objects.all()) == [keep]
    events = AuditEvent.objects.filter(action="token.revoked")
    assert {e.target_id for e in events} == {first.token_key, second.token_key}
    assert all(e.target_type == "apitoken" and e.actor_username == "admin" for e in events)
    assert audit_sealed_verify().ok
    with pytest.raises(Exception, match="Invalid token"):
        TokenAuthentication().authenticate_credentials(secret.encode())


def test_deleting_one_token_is_an_audited_revocation(admin_client, requester):
    token, _ = ApiToken.objects.create(user=requester, name="a")
    response = admin_client.post(admin_url(ApiToken, "delete", token.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not ApiToken.objects.exists()
    assert AuditEvent.objects.filter(action="token.revoked", target_id=token.token_key).exists()


def test_token_changelist_offers_revoke_not_plain_delete(admin_client, requester):
    ApiToken.objects.create(user=requester, name="a")
    content = admin_client.get(admin_url(ApiToken, "changelist")).content.decode()
    assert "revoke_selected" in content
    assert "delete_selected" not in content


# --- resources: labels kept in step -------------------------------------------------------


def resource_form(resource: Resource, **changes) -> dict:
    form = {
        "kind": resource.kind,
        "name": resource.name,
        "address": resource.address,
        "labels": json.dumps(resource.labels),
        "description": resource.description,
    }
    form.update(changes)
    return form


def label_rows(resource: Resource) -> dict[str, str]:
    return dict(ResourceLabel.objects.filter(resource=resource).values_list("key", "value"))


def test_editing_labels_in_admin_updates_label_rows(admin_client, web1):
    labels = {"env": "staging", "tier": "1"}
    response = admin_client.post(admin_url(Resource, "change", web1.pk), resource_form(web1, labels=json.dumps(labels)))
    assert response.status_code == 302
    web1.refresh_from_db()
    assert web1.labels == labels
    assert label_rows(web1) == labels
    assert list(Resource.objects.with_label("env", "staging")) == [web1]
    assert not Resource.objects.with_label("team").filter(pk=web1.pk).exists()


def test_adding_a_resource_in_admin_indexes_its_labels(admin_client):
    response = admin_client.post(
        admin_url(Resource, "add"),
        {
            "kind": "db",
            "name": "billing",
            "address": "db:5432",
            "labels": '{"env": "prod", "port": 5432}',
            "description": "",
        },
    )
    assert response.status_code == 302
    resource = Resource.objects.get(kind="db", name="billing")
    assert resource.labels == {"env": "prod", "port": "5432"}
    assert label_rows(resource) == {"env": "prod", "port": "5432"}


@pytest.mark.parametrize(
    "labels",
    ['{"bad key!": "x"}', '["env", "prod"]', '{"env": {"nested": true}}', "not json"],
    ids=["bad-key", "not-a-mapping", "non-string-value", "not-json"],
)
def test_bad_labels_are_a_form_error_and_nothing_is_saved(admin_client, web1, labels):
    before = label_rows(web1)
    response = admin_client.post(
        admin_url(Resource, "change", web1.pk), resource_form(web1, labels=labels, address="10.9.9.9:22")
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["labels"]
    web1.refresh_from_db()
    assert web1.labels == {"env": "prod", "team": "web"}
    assert web1.address == "10.0.0.5:22"
    assert label_rows(web1) == before


def test_duplicate_resource_name_within_kind_is_a_form_error(admin_client, web1):
    response = admin_client.post(admin_url(Resource, "add"), resource_form(web1))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert Resource.objects.filter(name="web-1").count() == 1


# --- roles -----------------------------------------------------------------------------


def role_form(**changes) -> dict:
    form = {
        "name": "db-read",
        "description": "",
        "resource_kinds": '["db"]',
        "resource_labels": '{"env": ["prod", "staging"]}',
        "logins": '["reader"]',
        "max_duration": "01:00:00",
        "approvals": "1",
        "denials": "1",
        "reason": "optional",
        "reason_hint": "",
        "reason_pattern": "",
        "max_extensions": "1",
        "pending_ttl": "1 00:00:00",
    }
    form.update(changes)
    return form


def test_role_added_in_admin(admin_client):
    response = admin_client.post(admin_url(Role, "add"), role_form())
    assert response.status_code == 302, response.context["adminform"].form.errors
    role = Role.objects.get(name="db-read")
    assert role.resource_labels == {"env": ["prod", "staging"]}
    assert role.logins == ["reader"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resource_labels", '{"env": {"a": 1}}'),
        ("resource_labels", '["env"]'),
        ("resource_kinds", '["server"]'),
        ("resource_kinds", '"node"'),
        ("logins", '"ubuntu"'),
        ("max_duration", "15 00:00:00"),
    ],
)
def test_role_with_a_malformed_selector_is_refused(admin_client, field, value):
    response = admin_client.post(admin_url(Role, "add"), role_form(**{field: value}))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert not Role.objects.filter(name="db-read").exists()


def test_a_single_selector_value_is_stored_as_a_list_as_the_policy_file_does(admin_client):
    # A string where a list belongs would otherwise be matched letter by letter.
    admin_client.post(admin_url(Role, "add"), role_form(resource_labels='{"env": "prod"}'))
    assert Role.objects.get(name="db-read").resource_labels == {"env": ["prod"]}


# --- constant queries per changelist ----------------------------------------------------


def changelist_queries(client, model) -> int:
    url = admin_url(model, "changelist")
    # "queue=all": the request list would otherwise open on the superuser's empty review queue.
    params = {"queue": "all"} if model is AccessRequest else {}
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params)
    assert response.status_code == 200
    assert response.context["cl"].result_count == model.objects.count()
    return len(queries)


def assert_constant_queries(client, model, grow, expected_rows: tuple[int, int]) -> None:
    client.get(admin_url(model, "changelist"))  # warm caches (content types, session)
    grow(5)
    small = changelist_queries(client, model)
    assert model.objects.count() == expected_rows[0]
    grow(25)
    large = changelist_queries(client, model)
    assert model.objects.count() == expected_rows[1]
    assert small == large, f"{model.__name__}: {small} queries for 5 rows, {large} for 30"


def test_request_changelist_queries_do_not_grow_with_rows(admin_client, requester, reviewer, one_step_role, web1, web2):
    assert_constant_queries(
        admin_client,
        AccessRequest,
        lambda n: approved_requests(
            n, requester=requester, reviewer=reviewer, role=one_step_role, resources=[web1, web2]
        ),
        (5, 30),
    )


def test_grant_changelist_queries_do_not_grow_with_rows(admin_client, requester, reviewer, one_step_role, web1):
    assert_constant_queries(
        admin_client,
        Grant,
        lambda n: approved_requests(n, requester=requester, reviewer=reviewer, role=one_step_role, resources=[web1]),
        (5, 30),
    )


def test_role_changelist_queries_do_not_grow_with_rows(admin_client):
    assert_constant_queries(admin_client, Role, lambda n: [make_role() for _ in range(n)], (5, 30))


def test_user_changelist_queries_do_not_grow_with_rows(admin_client):
    # admin_client's own superuser is the first row.
    assert_constant_queries(
        admin_client, User, lambda n: [make_user(groups=("engineers", "sre-leads")) for _ in range(n)], (6, 31)
    )


def test_review_token_and_audit_changelists_queries_do_not_grow_with_rows(
    admin_client, requester, reviewer, one_step_role, web1
):
    for model, grow in [
        (
            Review,
            lambda n: approved_requests(
                n, requester=requester, reviewer=reviewer, role=one_step_role, resources=[web1]
            ),
        ),
        (ApiToken, lambda n: [ApiToken.objects.create(user=make_user(), name="t") for _ in range(n)]),
        (Resource, lambda n: [make_resource(labels={"env": "prod"}) for _ in range(n)]),
    ]:
        client_counts = []
        admin_client.get(admin_url(model, "changelist"))
        for size in (5, 25):
            grow(size)
            client_counts.append(changelist_queries(admin_client, model))
        assert client_counts[0] == client_counts[1], model.__name__
    # The audit log grew with everything above; its page does not.
    small = changelist_queries(admin_client, AuditEvent)
    approved_requests(10, requester=requester, reviewer=reviewer, role=one_step_role, resources=[web1])
    assert changelist_queries(admin_client, AuditEvent) == small


def test_resource_changelist_search_is_the_portals_text_search(admin_client, data):
    make_resource("billing-7", address="10.7.7.7:22", description="Invoices API")

    def found(term: str) -> list[str]:
        response = admin_client.get(admin_url(Resource, "changelist"), {"q": term})
        assert response.status_code == 200
        return sorted(r.name for r in response.context["cl"].result_list)

    assert found("INVOICES") == ["billing-7"]
    assert found("10.7.7") == ["billing-7"]
    assert found("ling-") == ["billing-7"]
    assert found("billing-7 10.7") == []
