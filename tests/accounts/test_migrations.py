"""Upgrading keeps host agents working: users of "can check access" tokens get ``check_access``."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import User

BEFORE = [("accounts", "0002_role_ssh_extensions")]
AFTER = [("accounts", "0003_capabilities")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_users_of_check_access_tokens_get_the_capability_and_nobody_else():
    old = migrate(BEFORE)
    OldUser, OldToken = old.get_model("accounts", "User"), old.get_model("accounts", "ApiToken")
    agent = OldUser.objects.create(username="web-1-agent")
    person = OldUser.objects.create(username="alice", is_staff=True)
    OldToken.objects.create(user=agent, digest="a" * 128, token_key="agent", can_check_access=True)
    OldToken.objects.create(user=person, digest="b" * 128, token_key="alice")
    try:
        migrate(AFTER)
    finally:
        # Back to the latest state for whatever runs next.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert User.objects.get(username="web-1-agent").has_perm("accounts.check_access")
    alice = User.objects.get(username="alice")
    assert not any(alice.has_perm(f"accounts.{c}") for c in ("audit", "revoke", "check_access"))
