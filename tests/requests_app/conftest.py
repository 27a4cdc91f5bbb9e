"""Personas and roles for the portal and review-queue tests (tests/requests_app)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from requests_app import tasks
from tests.conftest import make_role
from tests.requests_app.portal import grant_review_permission


@pytest.fixture
def staff_reviewer(reviewer):
    """bob: in sre-leads (reviews prod-ssh); that alone opens the queue in the admin (no staff flag)."""
    return grant_review_permission(reviewer)


@pytest.fixture
def staff_reviewer2(reviewer2):
    """carol: the second sre-lead, also a reviewer in the admin (no staff flag)."""
    return grant_review_permission(reviewer2)


@pytest.fixture
def web_ssh(db):
    """Nodes labelled team=web, one approval, at most 30 minutes.

    With ``prod_ssh`` it overlaps on web-1 and web-2, so the requester must choose.
    """
    return make_role("web-ssh", resource_labels={"team": ["web"]}, approvals=1, max_duration=timedelta(minutes=30))


@pytest.fixture
def self_service(db):
    """An auto-approved role over dev nodes: grants without reviews."""
    return make_role("dev-ssh", resource_labels={"env": ["dev"]}, auto_approve=True, max_duration=timedelta(hours=4))


@pytest.fixture
def handed_off(monkeypatch):
    """Records hand-offs to workers instead of publishing to a broker: one entry per task, its ids in ``args[0]``."""
    calls: list[dict] = []

    def fake_apply_async(args=None, kwargs=None, **options):
        calls.append({"args": args, **options})

    monkeypatch.setattr(tasks.deliver_notifications, "apply_async", fake_apply_async)
    return calls
