"""Every operation of the live schema, fuzzed: no input may cause a server error.

schemathesis reads ``/api/schema/`` from the WSGI application (no network)
and sends generated requests to each operation, as a requester and as a
superuser (who holds every capability), with a real token. Bounded so the
whole file stays well under a minute and a half on SQLite.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from accounts.models import ApiToken
from jitportal.wsgi import application
from requests_app import services
from tests.conftest import make_resource, make_role, make_user

EXAMPLES_PER_OPERATION = 25


@pytest.fixture
def api_schema(db, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]  # the host schemathesis' client sends
    # As Django's test client does: the end of a request must not close the
    # connection that holds the test's transaction (PostgreSQL would lose it).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def world(db):
    """A little of everything, so generated ids and names sometimes hit real rows."""
    alice = make_user("alice", groups=("engineers",))
    bob = make_user("bob", groups=("sre-leads",))
    root = make_user("root", is_staff=True, is_superuser=True)
    web_ssh = make_role("web-ssh", approvals=1)
    make_role("prod-ssh", approvals=2, reason="required")
    web1 = make_resource("web-1", labels={"env": "prod", "team": "web"}, address="10.0.0.5:22")
    make_resource("web-2", labels={"env": "prod"})
    make_resource("orders", kind="db", labels={"env": "prod"})
    granted = services.request_create(requester=alice, resources=[web1], roles=[web_ssh], reason="INC-1")
    services.request_create(requester=alice, resources=[web1], roles=[web_ssh], reason="INC-2")
    services.request_review(request=granted, reviewer=bob, decision="approve")
    return {"requester": alice, "superuser": root}


def fuzz(operation, *, token: str) -> None:
    """Valid and invalid requests for one operation; a 5xx fails with the request that caused it."""
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call(headers={"Authorization": f"Token {token}"})
        case.validate_response(response, checks=[not_a_server_error])

    run()


@pytest.mark.parametrize("persona", ["requester", "superuser"])
def test_no_input_is_a_server_error(api_schema, world, persona):
    _, token = ApiToken.objects.create(user=world[persona], name="fuzz")
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    failures = []
    for operation in operations:
        try:
            fuzz(operation, token=token)
        except Exception as exc:  # collect every failing operation, not only the first
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
