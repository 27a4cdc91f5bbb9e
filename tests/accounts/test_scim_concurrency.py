"""An identity provider's calls at once, on PostgreSQL: the row lock loses no change and creates no twin.

Providers send in parallel (Entra ID and Okta both do). SQLite serialises
every writer, so these run only on PostgreSQL:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/pytest tests/accounts/test_scim_concurrency.py
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Group
from django.db import connection

from accounts.models import User
from accounts.scim.attributes import Operation, ScimError, UserState
from accounts.scim.services import scim_group_patch, scim_user_create, scim_user_patch
from audit.models import AuditEvent
from tests.conftest import give_capabilities, make_user

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="concurrency needs PostgreSQL row locks; set DATABASE_URL=postgres://... to run",
    ),
]


def run_at_once(calls: list[Callable[[], object]], *, timeout: float = 60) -> list[object]:
    """Run every call in its own thread, released together; returns each result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def worker(index: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[index] = call()
        except BaseException as exc:  # reported to the test
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return results


@pytest.fixture
def provisioner(db):
    return give_capabilities(make_user("entra-scim"), "scim")


def test_members_added_at_once_are_all_kept(provisioner):
    engineers = Group.objects.create(name="engineers")
    people = [make_user(f"p{i}") for i in range(6)]

    def add(user):
        operation = Operation("add", "members", [{"value": str(user.pk)}], True)
        return lambda: scim_group_patch(actor=provisioner, group_id=engineers.pk, operations=[operation])

    results = run_at_once([add(user) for user in people])

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert set(engineers.user_set.values_list("pk", flat=True)) == {u.pk for u in people}
    assert AuditEvent.objects.filter(action="scim.group_member_added").count() == len(people)


def test_the_same_user_created_twice_at_once_is_created_once(provisioner):
    results = run_at_once(
        [lambda: scim_user_create(actor=provisioner, state=UserState(username="dana", external_id="ext-d"))] * 4
    )

    created = [r for r in results if isinstance(r, User)]
    refused = [r for r in results if isinstance(r, ScimError)]
    assert len(created) == 1 and len(refused) == 3, results
    assert {(e.status_code, e.scim_type) for e in refused} == {(409, "uniqueness")}
    assert User.objects.filter(username="dana").count() == 1
    assert AuditEvent.objects.filter(action="scim.user_created").count() == 1


def test_a_deactivation_and_a_rename_at_once_both_land(provisioner):
    alice = make_user("alice")
    deactivate = Operation("replace", "active", "False", True)
    rename = Operation("replace", "username", "alice.liddell", True)

    results = run_at_once(
        [
            lambda: scim_user_patch(actor=provisioner, user_id=alice.pk, operations=[deactivate]),
            lambda: scim_user_patch(actor=provisioner, user_id=alice.pk, operations=[rename]),
        ]
    )

    assert not [r for r in results if isinstance(r, BaseException)], results
    alice.refresh_from_db()
    assert (alice.username, alice.is_active) == ("alice.liddell", False)
    assert sorted(AuditEvent.objects.filter(action__startswith="scim.user_").values_list("action", flat=True)) == [
        "scim.user_deactivated",
        "scim.user_updated",
    ]
