"""``jit`` says the same about what the user may not see as about what does not exist.

Each command is run against something that exists but is hidden from alice,
then again, word for word, after it is deleted: the output must not change.
"""

from __future__ import annotations

import pytest

from accounts.models import Role, User
from inventory.models import Resource
from tests.conftest import make_resource, make_role, make_user
from tests.ssh.test_cli import Jit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(live_server, tmp_path) -> Jit:
    make_user("alice", groups=("engineers",))
    make_user("bob", groups=("sre-leads",))
    make_role("web-ssh", reason="required", resource_labels={"env": ["prod"]})
    make_resource("web-1", labels={"env": "prod"})
    jit = Jit(tmp_path / "alice", live_server.url)
    jit.login("alice")
    return jit


def outcome(result) -> tuple:
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("hide", "args", "deleted"),
    [
        ("resource", ["request", "create", "--resource", "db/orders", "--reason", "INC-1"], "db/orders"),
        ("node", ["ssh", "ubuntu@dev-1"], "dev-1"),
        ("role", ["request", "create", "--role", "prod-db", "--reason", "INC-1"], "prod-db"),
        (
            "reviewer",
            ["request", "create", "--resource", "node/web-1", "--reviewer", "dave", "--reason", "INC-1"],
            "dave",
        ),
    ],
)
def test_hidden_and_missing_read_the_same(alice, hide, args, deleted):
    if hide == "resource":
        make_resource("orders", kind="db", labels={"env": "prod"})
    elif hide == "node":
        make_resource("dev-1", labels={"env": "dev"})
    elif hide == "role":
        make_role("prod-db", resource_kinds=["db"], requestable_by=("dba",))
    else:
        make_user("dave", groups=("engineers",))  # exists, reviews nothing

    hidden = alice(*args)
    if hide in ("resource", "node"):
        Resource.objects.filter(name=deleted.rpartition("/")[2]).delete()
    elif hide == "role":
        Role.objects.filter(name=deleted).delete()
    else:
        User.objects.filter(username=deleted).delete()
    missing = alice(*args)

    assert outcome(hidden) == outcome(missing)
    assert hidden.returncode != 0 and hidden.stderr.startswith("jit: ")
