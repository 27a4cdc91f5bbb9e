"""Factories and personas shared by the whole suite.

Personas: ``requester`` (in engineers), ``reviewer`` and ``reviewer2`` (in
sre-leads), ``outsider`` (in no group), ``auditor`` (holds the ``audit``
capability through the ``security`` group), ``revoker`` (holds ``revoke``
itself), ``staff`` (the staff flag alone: edits configuration, nothing more),
``superuser``. Role ``prod-ssh`` (nodes with env=prod, login ubuntu, two approvals)
is requestable by engineers and reviewed by sre-leads; ``web-1``/``web-2``
are prod nodes, ``dev-1`` a dev node and ``db-1`` a prod database.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import count

import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from accounts.models import Role, User
from accounts.scope import role_scope_sync
from audit.services import audit_seal, audit_verify
from inventory.models import Resource
from inventory.services import resource_upsert

_seq = count(1)


def make_user(
    username: str | None = None, *, groups: tuple[str, ...] = (), password: str = "pw-correct-horse", **extra
) -> User:
    username = username or f"user{next(_seq)}"
    user = User.objects.create_user(username=username, password=password, email=f"{username}@example.com", **extra)
    for name in groups:
        group, _ = Group.objects.get_or_create(name=name)
        user.groups.add(group)
    return user


def give_capabilities(holder: User | Group, *capabilities: str) -> User | Group:
    """Give a user or a group capabilities (``audit``, ``revoke``, ...); a user comes back fresh (no perm cache)."""
    permissions = Permission.objects.filter(content_type__app_label="accounts", codename__in=capabilities)
    assert permissions.count() == len(capabilities), capabilities
    if isinstance(holder, Group):
        holder.permissions.add(*permissions)
        return holder
    holder.user_permissions.add(*permissions)
    return User.objects.get(pk=holder.pk)


def make_role(
    name: str | None = None,
    *,
    requestable_by: tuple[str, ...] = ("engineers",),
    reviewers: tuple[str, ...] = ("sre-leads",),
    **fields,
) -> Role:
    fields.setdefault("resource_kinds", ["node"])
    fields.setdefault("resource_labels", {"env": ["prod"]})
    fields.setdefault("logins", ["ubuntu"])
    fields.setdefault("max_duration", timedelta(hours=1))
    role = Role.objects.create(name=name or f"role{next(_seq)}", **fields)
    role.requestable_by.set([Group.objects.get_or_create(name=n)[0] for n in requestable_by])
    role.reviewers.set([Group.objects.get_or_create(name=n)[0] for n in reviewers])
    # As the role admin and apply do after writing a selector.
    role_scope_sync(roles=[role])
    return role


def make_resource(name: str | None = None, *, kind: str = "node", labels: dict | None = None, **fields) -> Resource:
    resource, _ = resource_upsert(kind=kind, name=name or f"host{next(_seq)}", labels=labels or {}, **fields)
    return resource


@pytest.fixture
def requester(db):
    return make_user("alice", groups=("engineers",))


@pytest.fixture
def reviewer(db):
    return make_user("bob", groups=("sre-leads",))


@pytest.fixture
def reviewer2(db):
    return make_user("carol", groups=("sre-leads",))


@pytest.fixture
def outsider(db):
    return make_user("mallory")


@pytest.fixture
def staff(db):
    """The staff flag alone: edits roles, resources and channels, and nothing more."""
    return make_user("stella", is_staff=True)


@pytest.fixture
def auditor(db):
    """erin: reads everything through the security group's ``audit``; no staff flag."""
    user = make_user("erin", groups=("security",))
    give_capabilities(Group.objects.get(name="security"), "audit")
    return User.objects.get(pk=user.pk)


@pytest.fixture
def revoker(db):
    """ray: holds ``revoke`` himself; no staff flag."""
    return give_capabilities(make_user("ray"), "revoke")


@pytest.fixture
def superuser(db):
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def prod_ssh(db):
    return make_role("prod-ssh", approvals=2, reason="required", reason_hint="link the ticket")


@pytest.fixture
def web1(db):
    return make_resource("web-1", labels={"env": "prod", "team": "web"}, address="10.0.0.5:22")


@pytest.fixture
def web2(db):
    return make_resource("web-2", labels={"env": "prod", "team": "web"}, address="10.0.0.6:22")


@pytest.fixture
def dev1(db):
    return make_resource("dev-1", labels={"env": "dev", "team": "web"})


@pytest.fixture
def db1(db):
    return make_resource("orders", kind="db", labels={"env": "prod"})


@pytest.fixture
def api():
    """Returns a function giving an APIClient authenticated as a user (or anonymous)."""

    def client(user=None) -> APIClient:
        c = APIClient()
        if user is not None:
            c.force_authenticate(user=user)
        return c

    return client


@pytest.fixture(autouse=True)
def _clear_cache():
    """Throttle counters live in the cache; each test starts with none."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="session", autouse=True)
def _end_stray_postgres_sessions(django_db_setup, django_db_blocker):
    """Let pytest-django drop the PostgreSQL test database at the end.

    Live-server threads and subprocess helpers can leave a session open on it,
    and PostgreSQL refuses to drop a database that is still in use.
    """
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session", autouse=True)
def _allow_purging_the_audit_log(django_db_setup, django_db_blocker):
    """Let test teardown empty the audit tables on PostgreSQL.

    Their trigger refuses DELETE and TRUNCATE unless the session sets
    ``jitportal.audit_purge``; the test database sets it for every session,
    and the trigger tests turn it off in their own transaction.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER DATABASE {connection.ops.quote_name(connection.settings_dict['NAME'])} "
                "SET jitportal.audit_purge = 'on'"
            )
        # Sessions read database settings when they start.
        connection.close()


def audit_sealed_verify(**options):
    """Seal what the test recorded (beat does it after commit in production), then verify the chain."""
    audit_seal()
    return audit_verify(**options)
