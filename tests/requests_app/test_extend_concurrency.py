"""Races on extensions, on PostgreSQL: the chain's first request is the lock every extension path takes.

DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/pytest tests/requests_app/test_extend_concurrency.py
"""

from __future__ import annotations

import itertools

import pytest
from django.db import connection

from jitportal.errors import StateConflict
from requests_app.models import AccessRequest, Grant
from requests_app.services import grant_revoke, request_create, request_extend, request_review
from tests.conftest import audit_sealed_verify, give_capabilities, make_role, make_user
from tests.requests_app.test_concurrency import run_at_once, split

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="concurrency needs PostgreSQL row locks; set DATABASE_URL=postgres://... to run",
    ),
]

State = AccessRequest.State


@pytest.fixture
def people(db):
    return (
        make_user("alice", groups=("engineers",)),
        make_user("bob", groups=("sre-leads",)),
        give_capabilities(make_user("ray"), "revoke"),
    )


def approved(requester, reviewer, role) -> AccessRequest:
    req = request_create(requester=requester, roles=[role], reason="INC-1", duration="30m")
    request_review(request=req, reviewer=reviewer, decision="approve")
    return req


@pytest.mark.parametrize("round_", range(3))
def test_an_extension_approved_while_the_original_is_revoked_never_outlives_the_revocation(people, round_):
    alice, bob, ray = people
    role = make_role("prod-ops", approvals=1)
    original = approved(alice, bob, role)
    extension = request_extend(request=original, requester=alice, duration="30m", reason="more")
    calls = [
        lambda: request_review(request=extension, reviewer=bob, decision="approve"),
        lambda: grant_revoke(grant=original.grants.get(), by=ray, reason="incident over"),
    ]
    if round_ % 2:
        calls.reverse()

    split(run_at_once(calls))

    # Whichever won, nothing of the chain is left live: the revocation ends the continuation too,
    # or the approval finds nothing left to extend.
    assert not Grant.objects.filter(user=alice, revoked_at__isnull=True).exclude(request=original).exists()
    assert not Grant.objects.filter(request__in=[original, extension], revoked_at__isnull=True).exists()
    original.refresh_from_db()
    assert original.state == State.REVOKED
    assert audit_sealed_verify().ok


def test_two_extensions_at_once_make_one(people):
    alice, bob, _ = people
    role = make_role("prod-ops", approvals=1)  # max_extensions: 1
    original = approved(alice, bob, role)

    calls = [lambda: request_extend(request=original, requester=alice, duration="20m", reason="more")] * 6
    succeeded, failed = split(run_at_once(calls))

    assert len(succeeded) == 1
    assert {e.code for e in failed if isinstance(e, StateConflict)} == {"max_extensions"}
    assert original.extensions.count() == 1


def test_two_auto_approved_extensions_at_once_never_overlap(people):
    alice, _, _ = people
    role = make_role("dev-ops", approvals=1, auto_approve=True, max_extensions=5)
    original = request_create(requester=alice, roles=[role], duration="20m")

    calls = [lambda: request_extend(request=original, requester=alice, duration="10m")] * 5
    succeeded, _ = split(run_at_once(calls))

    assert len(succeeded) == 5
    windows = sorted(Grant.objects.filter(user=alice).values_list("starts_at", "expires_at"))
    assert len(windows) == 6
    # Each extension continues from where the one before ended: one unbroken run, no overlap.
    assert all(prev_end == next_start for (_, prev_end), (next_start, _) in itertools.pairwise(windows))
