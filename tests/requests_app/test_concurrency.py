"""Races on one request, on PostgreSQL: the row lock lets exactly one transition win.

Each scenario starts its threads together on a barrier; every thread opens its
own connection and closes it at the end. SQLite serialises every writer, so
these tests only mean something (and only run) on PostgreSQL:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/pytest tests/requests_app/test_concurrency.py
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditEvent
from jitportal.errors import StateConflict
from requests_app.models import AccessRequest, Grant, Review
from requests_app.services import (
    grant_drop,
    request_cancel,
    request_create,
    request_drop,
    request_expire_pending,
    request_post_review,
    request_review,
)
from tests.conftest import audit_sealed_verify, make_resource, make_role, make_user

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="concurrency needs PostgreSQL row locks; set DATABASE_URL=postgres://... to run",
    ),
]


State = AccessRequest.State
RESOLUTIONS = ("request.approved", "request.denied", "request.cancelled", "request.expired")


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

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a thread did not finish: a lock was never released"
    return results


def split(results: list[object]) -> tuple[list[object], list[BaseException]]:
    succeeded = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    unexpected = [r for r in failed if not isinstance(r, StateConflict)]
    assert not unexpected, f"only StateConflict may refuse a loser, got {unexpected!r}"
    return succeeded, failed


def resolution_events(req: AccessRequest) -> Counter:
    return Counter(
        AuditEvent.objects.filter(target_id=str(req.pk), action__in=RESOLUTIONS).values_list("action", flat=True)
    )


@pytest.fixture
def requester(db):
    return make_user("alice", groups=("engineers",))


@pytest.fixture
def reviewers(db):
    return [make_user(f"lead{i}", groups=("sre-leads",)) for i in range(10)]


@pytest.mark.parametrize("round_", range(4))
def test_approve_deny_and_cancel_at_once_resolve_the_request_exactly_once(requester, reviewers, round_):
    role = make_role("prod-ops", approvals=1, denials=1)
    req = request_create(requester=requester, roles=[role], reason="INC-1")
    # Rotate who goes first so different kinds of transition get to win.
    calls = [lambda: request_cancel(request=req, user=requester)] * 2
    for i, reviewer in enumerate(reviewers):
        decision = "approve" if (i + round_) % 2 else "deny"
        calls.append(
            lambda r=reviewer, d=decision: request_review(request=req, reviewer=r, decision=d, reason="checked")
        )
    calls = calls[round_:] + calls[:round_]

    succeeded, failed = split(run_at_once(calls))

    assert len(succeeded) == 1
    assert len(failed) == len(calls) - 1
    req.refresh_from_db()
    assert req.state in (State.APPROVED, State.DENIED, State.CANCELLED)
    assert sum(resolution_events(req).values()) == 1
    assert Grant.objects.filter(request=req).count() == (1 if req.state == State.APPROVED else 0)
    assert Review.objects.filter(request=req).count() == (0 if req.state == State.CANCELLED else 1)
    assert audit_sealed_verify().ok


def test_many_reviewers_approving_a_two_approval_request_grant_once(requester, reviewers):
    role = make_role("prod-ssh", approvals=2)
    resources = [make_resource(f"web-{i}", labels={"env": "prod"}) for i in range(3)]
    req = request_create(requester=requester, resources=resources, roles=[role], reason="INC-1")

    calls = [lambda r=r: request_review(request=req, reviewer=r, decision="approve") for r in reviewers]
    succeeded, failed = split(run_at_once(calls))

    assert len(succeeded) == 2
    assert all(isinstance(e, StateConflict) for e in failed)
    req.refresh_from_db()
    assert req.state == State.APPROVED
    assert Review.objects.filter(request=req).count() == 2
    assert Grant.objects.filter(request=req).count() == len(resources)
    assert resolution_events(req) == Counter({"request.approved": 1})
    assert audit_sealed_verify().ok


def test_one_reviewer_sending_the_same_review_at_once_is_recorded_once(requester, reviewers):
    # What a review turns on (already reviewed, the counts) is read after the lock, never from
    # a snapshot taken while waiting for it: the others are told, none fails on the unique row.
    role = make_role("prod-ops", approvals=3)
    req = request_create(requester=requester, roles=[role], reason="INC-1")
    lead = reviewers[0]

    calls = [lambda: request_review(request=req, reviewer=lead, decision="approve")] * 6
    succeeded, failed = split(run_at_once(calls))

    assert len(succeeded) == 1
    assert {str(e) for e in failed} == {"you have already reviewed this request"}
    req.refresh_from_db()
    assert req.state == State.PENDING
    assert Review.objects.filter(request=req).count() == 1


def test_approvals_and_denials_racing_on_a_two_approval_request_end_in_one_state(requester, reviewers):
    role = make_role("prod-ssh", approvals=2, denials=2)
    req = request_create(requester=requester, roles=[role], reason="INC-1")
    calls = [
        lambda r=r, d=("approve" if i % 2 else "deny"): request_review(
            request=req, reviewer=r, decision=d, reason="checked"
        )
        for i, r in enumerate(reviewers)
    ]
    calls.append(lambda: request_cancel(request=req, user=requester))

    succeeded, _ = split(run_at_once(calls))

    req.refresh_from_db()
    assert req.state in (State.APPROVED, State.DENIED, State.CANCELLED)
    assert sum(resolution_events(req).values()) == 1
    reviews = Counter(Review.objects.filter(request=req).values_list("decision", flat=True))
    if req.state == State.APPROVED:
        assert reviews["approve"] == 2 and reviews["deny"] <= 1
        assert Grant.objects.filter(request=req).count() == 1
    else:
        assert not Grant.objects.filter(request=req).exists()
    if req.state == State.DENIED:
        assert reviews["deny"] == 2 and reviews["approve"] <= 1
    # The reviews that got in, plus the cancel if it won.
    assert len(succeeded) == sum(reviews.values()) + (req.state == State.CANCELLED)
    assert audit_sealed_verify().ok


def test_sweep_and_late_reviews_expire_a_due_request_once(requester, reviewers):
    role = make_role("prod-ops", approvals=1)
    now = timezone.now()
    req = request_create(requester=requester, roles=[role], reason="INC-1", now=now)
    late = now + timedelta(days=2)
    calls = [lambda r=r: request_review(request=req, reviewer=r, decision="approve", now=late) for r in reviewers]
    calls.append(lambda: request_expire_pending(now=late))

    results = run_at_once(calls)

    sweep = results[-1]
    assert not isinstance(sweep, BaseException)
    assert all(isinstance(r, StateConflict) for r in results[:-1])
    req.refresh_from_db()
    assert req.state == State.EXPIRED
    assert resolution_events(req) == Counter({"request.expired": 1})
    assert not Review.objects.filter(request=req).exists()
    assert not Grant.objects.filter(request=req).exists()
    assert audit_sealed_verify().ok


def test_people_reviewing_each_others_requests_at_once_do_not_deadlock(db):
    # Everyone may request and review: each approves the next person's request.
    people = [make_user(f"peer{i}", groups=("engineers", "sre-leads")) for i in range(8)]
    role = make_role("prod-ops", approvals=1)
    reqs = [request_create(requester=p, roles=[role], reason="INC-1") for p in people]
    calls = [
        lambda i=i: request_review(request=reqs[i], reviewer=people[(i + 1) % len(people)], decision="approve")
        for i in range(len(people))
    ]

    results = run_at_once(calls)

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert set(AccessRequest.objects.values_list("state", flat=True)) == {State.APPROVED}
    assert Grant.objects.count() == len(people)
    assert audit_sealed_verify().ok


def test_a_review_waiting_for_the_lock_is_stamped_after_it_is_released(requester, reviewers):
    """Hold the request row in one transaction; a review started meanwhile records a time after the release."""
    role = make_role("prod-ops", approvals=1)
    req = request_create(requester=requester, roles=[role], reason="INC-1")
    started = threading.Event()
    outcome: list[object] = []

    def review() -> None:
        try:
            started.set()
            outcome.append(request_review(request=req, reviewer=reviewers[0], decision="approve", reason="ok"))
        except BaseException as exc:  # reported to the test
            outcome.append(exc)
        finally:
            connection.close()

    with transaction.atomic():
        AccessRequest.objects.select_for_update().get(pk=req.pk)
        thread = threading.Thread(target=review)
        thread.start()
        started.wait(timeout=10)
        time.sleep(0.5)  # the review is now waiting on the row lock
        assert not outcome
        released_at = timezone.now()
    thread.join(timeout=30)

    review_made = outcome[0]
    assert isinstance(review_made, Review), review_made
    req.refresh_from_db()
    assert review_made.created_at >= released_at
    assert req.resolved_at >= released_at


# --- drop and break-glass post-review ------------------------------------------------------------


@pytest.mark.parametrize("round_", range(3))
def test_a_rejecting_post_review_racing_a_drop_ends_the_access_once(requester, reviewers, round_):
    role = make_role("prod-emergency", break_glass=True)
    resources = [make_resource(f"db-{i}", labels={"env": "prod"}) for i in range(3)]
    req = request_create(requester=requester, resources=resources, roles=[role], reason="INC-7 outage")
    assert req.state == State.APPROVED
    calls = [
        lambda: request_drop(request=req, user=requester, reason="done"),
        lambda: request_post_review(request=req, reviewer=reviewers[0], decision="reject", reason="no incident"),
        lambda: grant_drop(grant=req.grants.order_by("pk").first(), user=requester),
    ]
    calls = calls[round_:] + calls[:round_]

    results = run_at_once(calls)

    # The post-review always goes through (access given back still gets its review); the drops
    # that came after the access had ended are refused, and no grant is ended twice.
    post_review = results[(1 - round_) % 3]
    assert not isinstance(post_review, BaseException), post_review
    req.refresh_from_db()
    assert req.state == State.REVOKED and req.post_review == AccessRequest.PostReview.REJECTED
    grants = list(Grant.objects.filter(request=req))
    assert all(g.revoked_at is not None for g in grants)
    ended = Counter(
        AuditEvent.objects.filter(action__in=("grant.dropped", "grant.revoked")).values_list("target_id", flat=True)
    )
    assert set(ended) == {str(g.pk) for g in grants} and set(ended.values()) == {1}
    assert AuditEvent.objects.filter(action="request.revoked", target_id=str(req.pk)).count() == 1
    assert audit_sealed_verify().ok


def test_two_post_reviews_at_once_record_one(requester, reviewers):
    role = make_role("prod-emergency", break_glass=True)
    req = request_create(requester=requester, roles=[role], reason="INC-8 outage")
    calls = [
        lambda r=r, d=("ratify" if i % 2 else "reject"): request_post_review(
            request=req, reviewer=r, decision=d, reason="looked"
        )
        for i, r in enumerate(reviewers[:6])
    ]

    succeeded, failed = split(run_at_once(calls))

    assert len(succeeded) == 1 and len(failed) == 5
    assert {e.code for e in failed} == {"already_post_reviewed"}
    req.refresh_from_db()
    assert AuditEvent.objects.filter(action="request.post_reviewed", target_id=str(req.pk)).count() == 1
    expected = State.REVOKED if req.post_review == AccessRequest.PostReview.REJECTED else State.APPROVED
    assert req.state == expected
    assert audit_sealed_verify().ok
