"""Policy as code: ``manage.py apply`` and the ``policy_apply`` service behind it."""

from __future__ import annotations

import io
import re
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.management.commands.apply import Command
from accounts.models import Role, User
from accounts.policy import PolicyResult, policy_apply, policy_load
from audit.models import AuditEvent
from inventory.models import Resource, ResourceLabel
from jitportal.errors import DomainError
from requests_app.models import AccessRequest
from requests_app.services import request_create
from tests.conftest import audit_sealed_verify, make_resource, make_role, make_user

pytestmark = pytest.mark.django_db

DEMO = Path(__file__).resolve().parents[2] / "demo" / "policy.yaml"

POLICY = """
groups: [engineers, sre-leads]
users:
  - {username: alice, email: alice@example.com, password: alice-pw, groups: [engineers]}
  - {username: bob, password: bob-pw, groups: [sre-leads, engineers], first_name: Bob}
  - {username: svc-deploy}
  - {username: root-admin, password: root-pw, staff: true, superuser: true}
roles:
  - name: prod-ssh
    resource_kinds: [node]
    resource_labels: {env: [prod]}
    logins: [ubuntu]
    max_duration: 1h
    requestable_by: [engineers]
    reviewers: [sre-leads]
    approvals: 2
    reason: required
  - name: any-db
    resource_kinds: [db]
    resource_labels: {env: "*", team: web}
    logins: [postgres]
    max_duration: 90m
    pending_ttl: 3600
    requestable_by: engineers
resources:
  - {kind: node, name: web-1, address: "10.0.0.5:22", labels: {env: prod, team: web}}
  - {kind: db, name: orders, labels: {env: prod, team: web}, description: Orders}
"""


def apply(text: str, *args: str, tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    out = io.StringIO()
    call_command("apply", "-f", str(path), *args, stdout=out)
    return out.getvalue()


def snapshot() -> dict:
    """Everything apply may touch, so a refused apply can be shown to have touched nothing."""
    return {
        "groups": sorted(Group.objects.values_list("name", flat=True)),
        "users": sorted(User.objects.values_list("username", "is_active", "is_staff", "password", "email")),
        "memberships": sorted(User.groups.through.objects.values_list("user__username", "group__name")),
        "roles": sorted(Role.objects.values_list("name", "approvals", "max_duration", "updated_at")),
        "requestable_by": sorted(Role.requestable_by.through.objects.values_list("role__name", "group__name")),
        "reviewers": sorted(Role.reviewers.through.objects.values_list("role__name", "group__name")),
        "resources": sorted(Resource.objects.values_list("kind", "name", "address", "updated_at")),
        "labels": sorted(ResourceLabel.objects.values_list("resource__name", "key", "value")),
        "audit": AuditEvent.objects.count(),
    }


def writes(queries) -> list[str]:
    return [q["sql"] for q in queries if re.match(r"\s*(INSERT|UPDATE|DELETE)\b", q["sql"], re.IGNORECASE)]


# --- creating and updating ---------------------------------------------------------


def test_apply_creates_everything_the_file_names(tmp_path):
    out = apply(POLICY, tmp_path=tmp_path)

    assert out.splitlines() == [
        "created group engineers",
        "created group sre-leads",
        "created user alice",
        "created user bob",
        "created user svc-deploy",
        "created user root-admin",
        "created role prod-ssh",
        "created role any-db",
        "created resource node/web-1",
        "created resource db/orders",
        "10 created, 0 updated, 0 deleted",
    ]
    alice = User.objects.get(username="alice")
    assert alice.check_password("alice-pw") and alice.email == "alice@example.com"
    assert {g.name for g in User.objects.get(username="bob").groups.all()} == {"sre-leads", "engineers"}
    assert not User.objects.get(username="svc-deploy").has_usable_password()
    root = User.objects.get(username="root-admin")
    assert root.is_staff and root.is_superuser and root.check_password("root-pw")

    role = Role.objects.get(name="prod-ssh")
    assert role.approvals == 2 and role.reason_required and role.max_duration == timedelta(hours=1)
    assert [g.name for g in role.requestable_by.all()] == ["engineers"]
    assert [g.name for g in role.reviewers.all()] == ["sre-leads"]
    any_db = Role.objects.get(name="any-db")
    # A single string is a one-item list; "*" any value; seconds and Go-style durations both parse.
    assert any_db.resource_labels == {"env": ["*"], "team": ["web"]}
    assert any_db.max_duration == timedelta(minutes=90) and any_db.pending_ttl == timedelta(hours=1)
    assert [g.name for g in any_db.requestable_by.all()] == ["engineers"] and not any_db.reviewers.exists()
    # The label index rows were written with the resources, so selectors find the resources.
    assert list(Resource.objects.matching_selector(role.resource_kinds, role.resource_labels)) == [
        Resource.objects.get(name="web-1")
    ]
    assert [r.name for r in Resource.objects.matching_selector(any_db.resource_kinds, any_db.resource_labels)] == [
        "orders"
    ]


def test_second_apply_reports_no_changes_and_writes_nothing(tmp_path):
    apply(POLICY, tmp_path=tmp_path)
    before = snapshot()

    with CaptureQueriesContext(connection) as queries:
        out = apply(POLICY, tmp_path=tmp_path)

    assert out == "no changes\n"
    assert writes(queries.captured_queries) == []
    assert snapshot() == before


def inventory(n: int, *, changed: int | None = None, field: str = "description") -> str:
    lines = ["resources:"]
    for i in range(n):
        address, env, description = f"10.0.0.{i}:22", "prod", f"host {i}"
        if i == changed:
            address, env, description = {
                "address": (f"10.9.9.{i}:22", env, description),
                "labels": (address, "dev", description),
                "description": (address, env, f"host {i} (moved)"),
            }[field]
        lines.append(
            f"  - {{kind: node, name: web-{i}, address: '{address}', labels: {{env: {env}, n: {i}}},"
            f" description: '{description}'}}"
        )
    return "\n".join(lines) + "\n"


def test_a_no_change_apply_reads_the_inventory_once_by_content_hash_and_writes_nothing(tmp_path):
    apply(inventory(40), tmp_path=tmp_path)
    before = snapshot()

    with CaptureQueriesContext(connection) as queries:
        out = apply(inventory(40), tmp_path=tmp_path)

    assert out == "no changes\n"
    assert writes(queries.captured_queries) == []
    assert snapshot() == before
    reads = [q["sql"] for q in queries.captured_queries if "inventory_resource" in q["sql"]]
    # One read of keys and hashes: no stored address, labels or description crossed over to be compared.
    assert len(reads) == 1 and "content_hash" in reads[0]
    assert '"labels"' not in reads[0] and '"description"' not in reads[0]


@pytest.mark.parametrize("field", ["address", "labels", "description"])
def test_one_changed_resource_among_many_is_found_and_only_it_is_written(tmp_path, field):
    apply(inventory(40), tmp_path=tmp_path)
    audited = AuditEvent.objects.count()

    with CaptureQueriesContext(connection) as queries:
        out = apply(inventory(40, changed=17, field=field), tmp_path=tmp_path)

    assert out.splitlines() == [f"updated resource node/web-17 ({field})", "0 created, 1 updated, 0 deleted"]
    web17 = Resource.objects.get(name="web-17")
    assert (web17.address, web17.labels["env"], web17.description) == {
        "address": ("10.9.9.17:22", "prod", "host 17"),
        "labels": ("10.0.0.17:22", "dev", "host 17"),
        "description": ("10.0.0.17:22", "prod", "host 17 (moved)"),
    }[field]
    assert AuditEvent.objects.count() == audited + 1
    updates = [sql for sql in writes(queries.captured_queries) if sql.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 1
    # Applying the changed file again is no change: the stored hash followed the write.
    assert apply(inventory(40, changed=17, field=field), tmp_path=tmp_path) == "no changes\n"


def test_a_resource_edited_outside_the_file_is_put_back_by_the_next_apply(tmp_path):
    apply(POLICY, tmp_path=tmp_path)
    orders = Resource.objects.get(name="orders")
    # As the admin writes it: save() keeps the content hash in step, so apply sees the edit.
    orders.description = "edited by hand"
    orders.save(update_fields=["description", "updated_at"])

    out = apply(POLICY, tmp_path=tmp_path)

    assert out.splitlines() == ["updated resource db/orders (description)", "0 created, 1 updated, 0 deleted"]
    assert Resource.objects.get(name="orders").description == "Orders"


def test_resources_stored_without_a_hash_are_compared_column_by_column_and_given_one(tmp_path):
    apply(inventory(10), tmp_path=tmp_path)
    # As rows written before the column existed.
    Resource.objects.update(content_hash=None)
    audited = AuditEvent.objects.count()

    with CaptureQueriesContext(connection) as queries:
        out = apply(inventory(10), tmp_path=tmp_path)

    assert out == "no changes\n"
    assert AuditEvent.objects.count() == audited
    assert all(sql.lstrip().upper().startswith("UPDATE") for sql in writes(queries.captured_queries))
    assert not Resource.objects.filter(content_hash__isnull=True).exists()
    with CaptureQueriesContext(connection) as queries:
        assert apply(inventory(10), tmp_path=tmp_path) == "no changes\n"
    assert writes(queries.captured_queries) == []


def test_user_groups_become_exactly_the_listed_ones(tmp_path):
    make_user("alice", groups=("sre-leads", "legacy"))

    out = apply(
        """
        groups: [engineers, sre-leads]
        users: [{username: alice, groups: [engineers, sre-leads]}]
        """,
        tmp_path=tmp_path,
    )

    assert {g.name for g in User.objects.get(username="alice").groups.all()} == {"engineers", "sre-leads"}
    assert "updated user alice (email, groups)" in out.splitlines()
    # The group itself is left alone without --prune.
    assert Group.objects.filter(name="legacy").exists()


def test_user_fields_left_out_take_the_model_default(tmp_path):
    make_user("alice", is_staff=True, first_name="Al")

    out = apply("users: [{username: alice, email: alice@example.com}]", tmp_path=tmp_path)

    alice = User.objects.get(username="alice")
    assert not alice.is_staff and alice.first_name == ""
    assert "updated user alice (first_name, staff)" in out.splitlines()
    # No password in the file: the existing one is kept, not replaced by an unusable one.
    assert alice.check_password("pw-correct-horse")


def test_password_is_set_only_when_it_does_not_already_match(tmp_path):
    make_user("alice", password="old-pw")

    out = apply("users: [{username: alice, email: alice@example.com, password: new-pw}]", tmp_path=tmp_path)

    assert out.splitlines() == ["updated user alice (password)", "0 created, 1 updated, 0 deleted"]
    assert User.objects.get(username="alice").check_password("new-pw")
    again = apply("users: [{username: alice, email: alice@example.com, password: new-pw}]", tmp_path=tmp_path)
    assert again == "no changes\n"


def test_role_groups_are_replaced_and_omitted_fields_reset(tmp_path):
    role = make_role(
        "prod-ssh",
        requestable_by=("engineers", "contractors"),
        reviewers=("sre-leads",),
        approvals=3,
        auto_approve=True,
    )
    Group.objects.create(name="security")
    old_updated_at = role.updated_at

    out = apply(
        """
        roles:
          - name: prod-ssh
            resource_kinds: [node]
            resource_labels: {env: [prod]}
            logins: [ubuntu]
            requestable_by: [engineers]
            reviewers: [security, sre-leads]
        """,
        tmp_path=tmp_path,
    )

    role.refresh_from_db()
    assert {g.name for g in role.requestable_by.all()} == {"engineers"}
    assert {g.name for g in role.reviewers.all()} == {"security", "sre-leads"}
    assert role.approvals == 1 and not role.auto_approve
    assert role.updated_at > old_updated_at
    assert out.splitlines()[0] == "updated role prod-ssh (approvals, auto_approve, requestable_by, reviewers)"


def test_changed_resource_labels_move_the_index_rows(tmp_path):
    make_resource("web-1", labels={"env": "staging", "team": "web"}, address="10.0.0.5:22")

    out = apply(
        "resources: [{kind: node, name: web-1, address: '10.0.0.5:22', labels: {env: prod}}]", tmp_path=tmp_path
    )

    assert "updated resource node/web-1 (labels)" in out.splitlines()
    assert list(ResourceLabel.objects.values_list("key", "value")) == [("env", "prod")]
    assert Resource.objects.matching_selector(["node"], {"env": ["prod"]}).count() == 1


def test_dry_run_reports_but_writes_nothing(tmp_path):
    before = snapshot()

    out = apply(POLICY, "--dry-run", tmp_path=tmp_path)

    assert "created role prod-ssh" in out.splitlines()
    assert out.splitlines()[-1] == "10 created, 0 updated, 0 deleted (dry run: nothing was written)"
    assert snapshot() == before


def test_reads_the_policy_from_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("groups: [engineers]\n"))
    out = io.StringIO()

    call_command("apply", "-f", "-", stdout=out)

    assert out.getvalue() == "created group engineers\n1 created, 0 updated, 0 deleted\n"
    assert Group.objects.filter(name="engineers").exists()
    assert AuditEvent.objects.get(action="policy.applied").target_id == "<stdin>"


def test_service_returns_the_changes_and_takes_keyword_arguments_only():
    result = policy_apply(data=policy_load("groups: [a, b]\nusers: [{username: u, groups: [a]}]"))

    assert isinstance(result, PolicyResult)
    assert result.created == ["group a", "group b", "user u"] and result.updated == [] and result.deleted == []
    assert result.summary() == "3 created, 0 updated, 0 deleted"
    with pytest.raises(TypeError):
        policy_apply({"groups": ["c"]})  # type: ignore[misc]
    assert not Group.objects.filter(name="c").exists()


# --- pruning ------------------------------------------------------------------


def test_prune_deletes_unnamed_roles_resources_and_groups_and_deactivates_users(tmp_path):
    apply(POLICY, tmp_path=tmp_path)
    make_role("old-role", requestable_by=("old-group",))
    make_resource("old-host", labels={"env": "prod"})
    make_user("mallory", groups=("engineers",))
    make_user("superroot", is_superuser=True, is_staff=True)

    out = apply(POLICY, "--prune", tmp_path=tmp_path).splitlines()

    assert out == [
        "updated user mallory (deactivated: not in the file)",
        "deleted role old-role",
        "deleted resource node/old-host",
        "deleted group old-group",
        "0 created, 1 updated, 3 deleted",
    ]
    assert not Role.objects.filter(name="old-role").exists()
    assert not Resource.objects.filter(name="old-host").exists()
    assert not Group.objects.filter(name="old-group").exists()
    # Users stay (history refers to them) but can no longer do anything.
    assert User.objects.get(username="mallory").is_active is False
    assert User.objects.get(username="superroot").is_active is True
    assert User.objects.get(username="alice").is_active is True
    assert apply(POLICY, "--prune", tmp_path=tmp_path) == "no changes\n"


def test_prune_touches_only_the_sections_the_file_has(tmp_path):
    role = make_role("keep-me")
    make_resource("keep-host")
    make_user("keep-user")

    out = apply("groups: [engineers, sre-leads]\n", "--prune", tmp_path=tmp_path)

    assert out == "no changes\n"
    assert Role.objects.filter(pk=role.pk).exists()
    assert Resource.objects.filter(name="keep-host").exists()
    assert User.objects.get(username="keep-user").is_active


def test_an_empty_section_with_prune_removes_everything_in_it(tmp_path):
    make_resource("a")
    make_resource("b", kind="db")

    out = apply("resources: []\n", "--prune", tmp_path=tmp_path)

    assert out.splitlines()[-1] == "0 created, 0 updated, 2 deleted"
    assert not Resource.objects.exists()


def test_a_bare_section_heading_does_not_prune_everything(tmp_path):
    make_user("keep-user")

    # "users:" with nothing under it is an unfinished file, not "there are no users".
    out = apply("groups: [engineers]\nusers:\n", "--prune", tmp_path=tmp_path)

    assert out.splitlines() == ["created group engineers", "1 created, 0 updated, 0 deleted"]
    assert User.objects.get(username="keep-user").is_active


@pytest.mark.parametrize("link", ["request", "grant"])
def test_prune_refuses_to_delete_what_history_refers_to_and_changes_nothing(tmp_path, link):
    apply(POLICY, tmp_path=tmp_path)
    old = make_role("old-role", resource_labels={"env": ["legacy"]})
    host = make_resource("legacy-1", labels={"env": "legacy"})
    make_role("unused-role")
    now = timezone.now()
    req = AccessRequest.objects.create(
        requester=User.objects.get(username="alice"),
        duration=timedelta(hours=1),
        pending_expires_at=now + timedelta(hours=1),
    )
    req.roles.add(old)
    req.resources.add(host)
    if link == "grant":
        req.grants.create(
            user=req.requester, role=old, resource=host, starts_at=now, expires_at=now + timedelta(hours=1)
        )
    before = snapshot()

    with pytest.raises(CommandError) as exc:
        apply(POLICY, "--prune", tmp_path=tmp_path)

    message = str(exc.value)
    assert "role old-role (1 access request" in message
    assert "resource node/legacy-1 (1 access request" in message
    if link == "grant":
        assert "1 grant" in message
    assert "unused-role" not in message
    # Nothing was pruned, not even the role nothing refers to.
    assert snapshot() == before
    assert list(req.roles.all()) == [old]


def test_prune_needs_referenced_groups_in_the_file(tmp_path):
    Group.objects.create(name="legacy")

    with pytest.raises(CommandError) as exc:
        apply("groups: [engineers]\nusers: [{username: alice, groups: [legacy]}]\n", "--prune", tmp_path=tmp_path)

    assert str(exc.value) == "users[0] (alice).groups: group 'legacy' is not in the file's groups"
    assert not User.objects.filter(username="alice").exists()
    assert Group.objects.filter(name="legacy").exists()
    # Without --prune an existing group is a valid reference.
    apply("groups: [engineers]\nusers: [{username: alice, groups: [legacy]}]\n", tmp_path=tmp_path)
    assert [g.name for g in User.objects.get(username="alice").groups.all()] == ["legacy"]


# --- refusals -----------------------------------------------------------------

# Valid entries first, so a refusal must undo what the earlier entries would write.
VALID_HEAD = """
groups: [engineers, sre-leads]
users:
  - {username: alice, password: alice-pw, groups: [engineers]}
roles:
  - {name: ok-role, resource_kinds: [node], logins: [ubuntu], requestable_by: [engineers]}
resources:
  - {kind: node, name: web-1, labels: {env: prod}}
"""

BAD_ENTRIES = {
    "unknown kind": (
        "resources",
        "{kind: server, name: web-2}",
        "resources[1] (server/web-2).kind: 'server' is not one of node, db, kube_cluster, app, windows_desktop",
    ),
    "unknown kind in a role": (
        "roles",
        "{name: r, resource_kinds: [nodes]}",
        "roles[1] (r).resource_kinds: 'nodes' is not one of node, db, kube_cluster, app, windows_desktop",
    ),
    "bad duration": (
        "roles",
        "{name: r, max_duration: 2 hours}",
        "roles[1] (r).max_duration: '2 hours' is not a duration",
    ),
    "duration over 14 days": (
        "roles",
        "{name: r, max_duration: 15d}",
        "roles[1] (r).max_duration: 15d is longer than the 14d maximum",
    ),
    "zero pending ttl": ("roles", "{name: r, pending_ttl: 0}", "roles[1] (r).pending_ttl: a duration must be positive"),
    "approvals 0": ("roles", "{name: r, approvals: 0}", "roles[1] (r).approvals: must be a whole number from 1"),
    "denials not a number": ("roles", "{name: r, denials: two}", "roles[1] (r).denials: must be a whole number"),
    "bad reason mode": ("roles", "{name: r, reason: always}", "roles[1] (r).reason: must be one of required, optional"),
    "unknown group in a role": (
        "roles",
        "{name: r, reviewers: [sre-lead]}",
        "roles[1] (r).reviewers: group 'sre-lead' is not in the file's groups or the database",
    ),
    "unknown group for a user": (
        "users",
        "{username: bob, groups: [admins]}",
        "users[1] (bob).groups: group 'admins' is not in the file's groups or the database",
    ),
    "unknown key": ("roles", "{name: r, approval: 2}", "roles[1] (r).approval: unknown key (did you mean approvals?)"),
    "unknown user key": ("users", "{username: bob, admin: true}", "users[1] (bob).admin: unknown key"),
    "labels not a mapping": (
        "resources",
        "{kind: node, name: web-2, labels: [env=prod]}",
        "resources[1] (node/web-2).labels: labels must be a mapping of key to value",
    ),
    "selector not a mapping": (
        "roles",
        "{name: r, resource_labels: [env]}",
        "roles[1] (r).resource_labels: must be a mapping",
    ),
    "empty selector values": (
        "roles",
        "{name: r, resource_labels: {env: []}}",
        "roles[1] (r).resource_labels: env: needs at least one value",
    ),
    "flag not a boolean": (
        "users",
        "{username: bob, staff: 'yes please'}",
        "users[1] (bob).staff: must be true or false",
    ),
    "missing name": ("roles", "{description: nameless}", "roles[1].name: is required"),
    "duplicate role": ("roles", "{name: ok-role}", "roles[1] (ok-role): listed twice (also roles[0])"),
    "login with @": ("roles", "{name: r, logins: ['root@host']}", "roles[1] (r).logins: 'root@host' may not contain"),
    "bad reason pattern": (
        "roles",
        "{name: r, reason_pattern: '(INC-[0-9]+'}",
        "roles[1] (r).reason_pattern: '(INC-[0-9]+' is not a valid regular expression",
    ),
    "negative max_extensions": (
        "roles",
        "{name: r, max_extensions: -1}",
        "roles[1] (r).max_extensions: must be a whole number from 0",
    ),
    "bad email": ("users", "{username: bob, email: not-an-address}", "users[1] (bob).email: 'not-an-address' is not"),
}


def with_bad_entry(section: str, entry: str) -> str:
    lines = textwrap.dedent(VALID_HEAD).splitlines()
    at = lines.index(f"{section}:") + 2  # after the section's one valid entry
    lines.insert(at, f"  - {entry}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
def test_a_bad_entry_is_named_and_nothing_changes(tmp_path, case):
    section, entry, expected = case
    make_user("existing", groups=("sre-leads",))
    before = snapshot()

    with pytest.raises(CommandError) as exc:
        apply(with_bad_entry(section, entry), tmp_path=tmp_path)

    assert str(exc.value).startswith(expected)
    assert "\n" not in str(exc.value)
    assert snapshot() == before


def test_the_valid_head_alone_applies(tmp_path):
    # Guards the refusal cases above: they fail because of the bad entry, not the head.
    out = apply(VALID_HEAD, tmp_path=tmp_path)
    assert out.splitlines()[-1] == "5 created, 0 updated, 0 deleted"


def test_error_names_entry_index_name_and_field_exactly(tmp_path):
    text = """
    groups: [engineers]
    roles:
      - {name: a, resource_kinds: [node]}
      - {name: b, resource_kinds: [db]}
      - {name: prod-ssh, resource_kinds: [node], max_duration: 20d}
    """
    with pytest.raises(DomainError) as exc:
        policy_apply(data=policy_load(textwrap.dedent(text)))

    assert exc.value.message == "roles[2] (prod-ssh).max_duration: 20d is longer than the 14d maximum"
    assert exc.value.field == "roles[2].max_duration"
    assert not Role.objects.exists() and not Group.objects.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("roles:\n  - name: a\n   approvals: 2\n", "the policy is not valid YAML (line 3, column"),
        ("roles: [\n", "the policy is not valid YAML (line 2, column 1)"),
        ("roles:\n  - {name: a, approvals: 1, approvals: 2}\n", "found duplicate key 'approvals'"),
        ("groups: [a]\ngroups: [b]\n", "found duplicate key 'groups'"),
        ("", "the policy is empty"),
        ("- just a list\n", "the policy must be a mapping"),
        ("role: []\n", "role: unknown section (did you mean roles?)"),
        ("roles: {name: a}\n", "roles: must be a list"),
    ],
)
def test_malformed_documents_are_refused_readably(tmp_path, text, expected):
    Group.objects.create(name="existing")
    before = snapshot()

    with pytest.raises(CommandError) as exc:
        apply(text, tmp_path=tmp_path)

    assert expected in str(exc.value)
    assert "\n" not in str(exc.value)
    assert snapshot() == before


def test_a_failure_while_writing_rolls_back_what_was_already_written(tmp_path, monkeypatch):
    def collide(**kwargs):
        raise IntegrityError("UNIQUE constraint failed: inventory_resource.kind, inventory_resource.name")

    # As if another writer created the resource between the checks and the write.
    monkeypatch.setattr("accounts.policy.writer.resources_upsert_many", collide)
    before = snapshot()

    with pytest.raises(CommandError, match=r"^the database changed while applying \(UNIQUE constraint failed"):
        apply(POLICY, tmp_path=tmp_path)

    assert snapshot() == before


def test_command_exits_non_zero_with_one_line_on_stderr(tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text("roles: [{name: r, approvals: 0}]\n")
    # run_from_argv closes connections when done; keep the test's transaction open.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)

    with pytest.raises(SystemExit) as exc:
        Command().run_from_argv(["manage.py", "apply", "-f", str(path)])

    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["CommandError: roles[0] (r).approvals: must be a whole number from 1 to 32767, not 0"]
    assert not Role.objects.exists()


def test_missing_file_is_a_readable_error(tmp_path):
    with pytest.raises(CommandError, match=r"nope\.yaml: No such file or directory"):
        call_command("apply", "-f", str(tmp_path / "nope.yaml"))


# --- audit --------------------------------------------------------------------


def test_each_changing_apply_is_audited_once_and_a_no_change_apply_not_at_all(tmp_path):
    apply(POLICY, tmp_path=tmp_path)
    apply(POLICY, tmp_path=tmp_path)
    apply(POLICY, "--dry-run", tmp_path=tmp_path)
    apply(POLICY.replace("approvals: 2", "approvals: 3"), tmp_path=tmp_path)

    events = list(AuditEvent.objects.filter(action="policy.applied").order_by("id"))
    assert len(events) == 2
    first, second = events
    assert first.actor is None and first.target_type == "policy"
    path = str(tmp_path / "policy.yaml")
    # target_id holds 64 characters; a longer path keeps its end.
    assert first.target_id == (path if len(path) <= 64 else "…" + path[-63:])
    assert "role prod-ssh" in first.data["created"] and first.data["updated"] == [] and first.data["deleted"] == []
    assert second.data == {"created": [], "updated": ["role prod-ssh (approvals)"], "deleted": []}
    assert audit_sealed_verify().ok


def test_refused_apply_leaves_no_audit_event(tmp_path):
    with pytest.raises(CommandError):
        apply(with_bad_entry("roles", "{name: r, approvals: 0}"), tmp_path=tmp_path)
    assert not AuditEvent.objects.filter(action="policy.applied").exists()


# --- the demo policy ----------------------------------------------------------


def test_demo_policy_applies_cleanly_and_is_idempotent():
    out = io.StringIO()
    call_command("apply", "-f", str(DEMO), stdout=out)
    assert out.getvalue().splitlines()[-1].endswith("0 updated, 0 deleted")
    kinds = set(Resource.objects.values_list("kind", flat=True))
    assert kinds == set(Resource.Kind.values)
    assert 45 <= Resource.objects.count() <= 60

    with CaptureQueriesContext(connection) as queries:
        again = io.StringIO()
        call_command("apply", "-f", str(DEMO), stdout=again)
    assert again.getvalue() == "no changes\n"
    assert writes(queries.captured_queries) == []


def test_demo_logins_listed_in_the_file_work():
    call_command("apply", "-f", str(DEMO), stdout=io.StringIO())
    logins = re.findall(r"^# login: (\S+)\s+/\s+(\S+)", DEMO.read_text(), re.MULTILINE)
    assert {"alice", "bob", "carol", "dave", "erin", "admin"} <= {u for u, _ in logins}
    for username, password in logins:
        assert User.objects.get(username=username).check_password(password), username
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff


def test_demo_engineers_get_exactly_one_role_per_resource_and_dave_sees_the_overlap():
    call_command("apply", "-f", str(DEMO), stdout=io.StringIO())
    engineer_roles = list(Role.objects.filter(requestable_by__name="engineers"))
    for resource in Resource.objects.all():
        matching = [r.name for r in engineer_roles if r.matches(resource)]
        assert len(matching) == 1, (resource.ref, matching)

    alice = User.objects.get(username="alice")
    web = list(Resource.objects.filter(kind="node", name__in=["web-1", "web-2"]))
    assert [r.name for r in request_create(requester=alice, resources=web, reason="INC-1").roles.all()] == ["prod-ssh"]

    dave = User.objects.get(username="dave")
    with pytest.raises(DomainError, match=r"db/orders: several roles .*db-admin, prod-db"):
        request_create(requester=dave, resources=[Resource.objects.get(kind="db", name="orders")], reason="x")


# --- SSH certificate extensions per role ------------------------------------------------


def test_role_ssh_extensions_default_to_the_model_and_follow_the_file(tmp_path):
    apply(POLICY, tmp_path=tmp_path)
    role = Role.objects.get(name="prod-ssh")
    assert (role.ssh_permit_pty, role.ssh_permit_port_forwarding, role.ssh_permit_agent_forwarding) == (
        True,
        False,
        False,
    )

    changed = POLICY.replace(
        "    approvals: 2\n", "    approvals: 2\n    ssh_permit_pty: false\n    ssh_permit_agent_forwarding: true\n"
    )
    out = apply(changed, tmp_path=tmp_path)

    assert out.splitlines()[0] == "updated role prod-ssh (ssh_permit_pty, ssh_permit_agent_forwarding)"
    role.refresh_from_db()
    assert (role.ssh_permit_pty, role.ssh_permit_port_forwarding, role.ssh_permit_agent_forwarding) == (
        False,
        False,
        True,
    )
    assert apply(changed, tmp_path=tmp_path) == "no changes\n"
    # Left out again, they go back to the model defaults like every other role field.
    assert apply(POLICY, tmp_path=tmp_path).splitlines()[0] == (
        "updated role prod-ssh (ssh_permit_pty, ssh_permit_agent_forwarding)"
    )


def test_role_ssh_extension_must_be_a_boolean(tmp_path):
    bad = POLICY.replace("    approvals: 2\n", "    approvals: 2\n    ssh_permit_port_forwarding: sometimes\n")

    with pytest.raises(CommandError) as exc:
        apply(bad, tmp_path=tmp_path)

    assert str(exc.value) == "roles[0] (prod-ssh).ssh_permit_port_forwarding: must be true or false"
    assert not Role.objects.exists()


def test_role_break_glass_is_set_by_the_file_and_must_be_a_boolean(tmp_path):
    glass = POLICY.replace("    approvals: 2\n", "    approvals: 2\n    break_glass: true\n")
    apply(glass, tmp_path=tmp_path)
    assert Role.objects.get(name="prod-ssh").break_glass is True
    # Left out again, it goes back to the default: a role is break-glass only when the file says so.
    assert apply(POLICY, tmp_path=tmp_path).splitlines()[0] == "updated role prod-ssh (break_glass)"
    assert Role.objects.get(name="prod-ssh").break_glass is False

    bad = POLICY.replace("    approvals: 2\n", "    approvals: 2\n    break_glass: sometimes\n")
    with pytest.raises(CommandError) as exc:
        apply(bad, tmp_path=tmp_path)
    assert str(exc.value) == "roles[0] (prod-ssh).break_glass: must be true or false"
    assert Role.objects.get(name="prod-ssh").break_glass is False


# --- capabilities: held by groups or users, declared in the file ---------------------------


CAPABLE = POLICY.replace(
    "groups: [engineers, sre-leads]",
    "groups: [engineers, sre-leads, {name: security, capabilities: [audit, revoke]}, "
    "{name: host-agents, capabilities: check_access}]",
).replace("  - {username: svc-deploy}", "  - {username: svc-deploy, capabilities: [manage_oncall, scim]}")


def capabilities_of(username: str) -> set[str]:
    user = User.objects.get(username=username)  # fresh: no permission cache
    return {c for c in ("audit", "revoke", "check_access", "manage_oncall", "scim") if user.has_perm(f"accounts.{c}")}


def group_capabilities(name: str) -> set[str]:
    return set(Group.objects.get(name=name).permissions.values_list("codename", flat=True))


def test_groups_and_users_hold_the_capabilities_the_file_declares(tmp_path):
    assert CAPABLE != POLICY
    out = apply(CAPABLE, tmp_path=tmp_path)

    assert "created group security" in out.splitlines()
    assert group_capabilities("security") == {"audit", "revoke"}
    assert group_capabilities("host-agents") == {"check_access"}
    assert group_capabilities("engineers") == set()
    assert capabilities_of("svc-deploy") == {"manage_oncall", "scim"}
    assert capabilities_of("alice") == set()
    # Through the group: bob joins security.
    apply(CAPABLE.replace("groups: [sre-leads, engineers]", "groups: [sre-leads, security]"), tmp_path=tmp_path)
    assert capabilities_of("bob") == {"audit", "revoke"}
    # Superusers hold every capability without being given any.
    assert capabilities_of("root-admin") == {"audit", "revoke", "check_access", "manage_oncall", "scim"}


def test_capabilities_apply_twice_changes_nothing_and_removed_ones_go(tmp_path):
    apply(CAPABLE, tmp_path=tmp_path)
    assert apply(CAPABLE, tmp_path=tmp_path) == "no changes\n"

    # Permissions given in the admin that are not capabilities are not the file's: they stay.
    Group.objects.get(name="security").permissions.add(Permission.objects.get(codename="view_resource"))
    narrower = CAPABLE.replace("capabilities: [audit, revoke]", "capabilities: [audit]").replace(
        "{username: svc-deploy, capabilities: [manage_oncall, scim]}", "{username: svc-deploy, capabilities: scim}"
    )
    out = apply(narrower, tmp_path=tmp_path)

    assert out.splitlines()[:2] == ["updated group security (capabilities)", "updated user svc-deploy (capabilities)"]
    assert group_capabilities("security") == {"audit", "view_resource"}
    assert capabilities_of("svc-deploy") == {"scim"}
    assert apply(narrower, tmp_path=tmp_path) == "no changes\n"
    # A plain name is a group with no capabilities.
    apply(POLICY.replace("[engineers, sre-leads]", "[engineers, sre-leads, security, host-agents]"), tmp_path=tmp_path)
    assert group_capabilities("security") == {"view_resource"}
    assert capabilities_of("svc-deploy") == set()


def test_prune_removes_the_capabilities_of_what_the_file_no_longer_names(tmp_path):
    apply(CAPABLE, tmp_path=tmp_path)
    without = CAPABLE.replace(", {name: host-agents, capabilities: check_access}", "").replace(
        "  - {username: svc-deploy, capabilities: [manage_oncall, scim]}\n", ""
    )
    out = apply(without, "--prune", tmp_path=tmp_path)

    assert "deleted group host-agents" in out
    assert "updated user svc-deploy (deactivated: not in the file)" in out
    assert not Group.objects.filter(name="host-agents").exists()
    svc = User.objects.get(username="svc-deploy")
    svc.is_active = True  # reactivated by hand later: the file's capabilities do not come back
    svc.save(update_fields=["is_active"])
    assert capabilities_of("svc-deploy") == set()
    assert apply(without, "--prune", tmp_path=tmp_path).splitlines()[0] == (
        "updated user svc-deploy (deactivated: not in the file)"
    )
    assert capabilities_of("svc-deploy") == set()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "capabilities: [audit, revoke]",
            "capabilities: [audit, revoek]",
            "groups[2] (security).capabilities: unknown capability 'revoek' (did you mean revoke?)",
        ),
        (
            "capabilities: [manage_oncall, scim]",
            "capabilities: [superpowers]",
            "users[2] (svc-deploy).capabilities: unknown capability 'superpowers' "
            "(known: audit, revoke, check_access, manage_oncall, scim)",
        ),
        ("{name: security, capabilities", "{name: security, powers", "groups[2] (security).powers: unknown key"),
        ("capabilities: check_access", "capabilities: {a: 1}", "groups[3] (host-agents).capabilities: must be a list"),
    ],
)
def test_an_unknown_capability_fails_naming_the_entry_and_field(tmp_path, old, new, message):
    bad = CAPABLE.replace(old, new)
    assert bad != CAPABLE

    with pytest.raises(CommandError) as exc:
        apply(bad, tmp_path=tmp_path)

    assert str(exc.value).startswith(message)
    assert not Group.objects.exists() and not User.objects.exists()


def test_reviewer_flag_is_still_accepted_and_gives_nothing(tmp_path):
    flagged = POLICY.replace("first_name: Bob}", "first_name: Bob, reviewer: true, staff: false}")
    assert flagged != POLICY
    apply(flagged, tmp_path=tmp_path)

    bob = User.objects.get(username="bob")
    assert not bob.is_staff and capabilities_of("bob") == set()
    assert apply(POLICY, tmp_path=tmp_path) == "no changes\n"


def test_demo_policy_gives_erin_audit_and_revoke_and_reviewers_no_staff_flag():
    call_command("apply", "-f", str(DEMO), stdout=io.StringIO())

    assert capabilities_of("erin") == {"audit", "revoke"}
    assert group_capabilities("security") == {"audit", "revoke"}
    for name in ("alice", "bob", "carol", "dave", "frank"):
        assert capabilities_of(name) == set(), name
    assert set(User.objects.filter(is_staff=True).values_list("username", flat=True)) == {"admin"}
    reviewers = set(User.objects.filter(groups__reviewable_roles__isnull=False).values_list("username", flat=True))
    assert reviewers == {"bob", "carol", "dave", "erin", "frank"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Aliases reach across entries and sections; tags and anchors on a section keep their meaning.
        ("x: &r [1]\ny: *r\n", {"x": [1], "y": [1]}),
        ("resources:\n  - &web {kind: node, name: a}\n  - *web\n", {"resources": [{"kind": "node", "name": "a"}] * 2}),
        ("resources: !!seq\n  - {kind: node}\n", {"resources": [{"kind": "node"}]}),
        ("!!map {groups: [a]}\n", {"groups": ["a"]}),
        ("groups:\n  - {<<: {name: a}, name: b}\n", {"groups": [{"name": "b"}]}),
    ],
)
def test_the_loader_reads_entry_by_entry_with_yaml_meaning_intact(text, expected):
    assert policy_load(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("groups: [a]\nresources: []\ngroups: [b]\n", "(line 3, column 1): found duplicate key 'groups'"),
        ("resources:\n  - kind: node\n    kind: db\n", "(line 3, column 5): found duplicate key 'kind'"),
        ("groups: [a]\n---\ngroups: [b]\n", "(line 2, column 1): but found another document"),
        ("? [a]\n: 1\n", "(line 1, column 3): found unhashable key"),
    ],
)
def test_the_loader_refuses_what_yaml_would_drop_naming_the_line(text, expected):
    with pytest.raises(DomainError) as exc:
        policy_load(text)

    assert exc.value.message.endswith(expected)


def test_reason_pattern_and_max_extensions_are_applied(tmp_path):
    text = """
groups: [engineers]
roles:
  - name: ticketed
    reason_pattern: "(INC|CHG)-[0-9]+.*"
    reason_hint: start with the ticket
    max_extensions: 0
"""
    apply(text, tmp_path=tmp_path)
    role = Role.objects.get(name="ticketed")
    assert (role.reason_pattern, role.max_extensions) == ("(INC|CHG)-[0-9]+.*", 0)
    assert role.reason_matches("CHG-7 deploy") and not role.reason_matches("see CHG-7")
    assert apply(text, tmp_path=tmp_path) == "no changes\n"


def test_review_requires_mfa_is_applied_and_checked():
    text = """
    groups: [engineers]
    roles:
      - {name: prod-root, resource_kinds: [node], review_requires_mfa: true}
      - {name: prod-ssh, resource_kinds: [node]}
    """
    policy_apply(data=policy_load(textwrap.dedent(text)))
    assert dict(Role.objects.values_list("name", "review_requires_mfa")) == {"prod-root": True, "prod-ssh": False}

    with pytest.raises(DomainError) as exc:
        policy_apply(data=policy_load(textwrap.dedent(text.replace("true}", '"yes"}'))))
    assert exc.value.field == "roles[0].review_requires_mfa"
    assert Role.objects.get(name="prod-root").review_requires_mfa is True


@pytest.mark.parametrize(
    "entry",
    [
        # Plain entries, built from the events: every scalar as YAML 1.1 reads it.
        "{kind: node, name: web-1, port: 22, ratio: 1.5, on: yes, off: No, none: ~, empty: null, when: 2024-01-02}",
        "{name: '22', quoted: \"true\", octal: 0o17, hex: 0x1F, exp: 1e3, inf: .inf, sexagesimal: 1:30}",
        "literal: |\n      two\n      lines\n    folded: >\n      one\n      line\n    kind: 'db'",
        "{labels: {env: prod, n: 7}, list: [a, 1, [b, {c: d}]], blank: , '': empty-key, 3: int-key}",
        # Not plain: composed and constructed as usual from the same events.
        "{tagged: !!str 123, name: x}",
        "{<<: {name: merged, kind: db}, kind: node}",
        "&anchored {kind: node, name: y}",
        "{set: !!set {a, b}, bin: !!binary aGk=}",
    ],
)
def test_the_entry_by_entry_loader_reads_each_entry_as_yaml_does(entry):
    text = f"resources:\n  - {entry}\n  - {{kind: node, name: after}}\n"

    assert policy_load(text) == yaml.load(text, Loader=yaml.CSafeLoader)


def test_a_duplicate_key_deep_in_a_plain_entry_is_refused_naming_its_line():
    text = "resources:\n  - kind: node\n    labels:\n      env: prod\n      env: dev\n"

    with pytest.raises(DomainError) as exc:
        policy_load(text)

    assert exc.value.message.endswith("(line 5, column 7): found duplicate key 'env'")
