"""``jit login --token``: a token made on the portal, read from standard input, checked and kept.

Run as a real subprocess against a live portal, as the other CLI tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from accounts.models import ApiToken
from accounts.services import token_create
from tests.conftest import make_user
from tests.ssh.test_cli import Jit, one_line_error

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(live_server, tmp_path) -> Jit:
    make_user("alice", groups=("engineers",))
    return Jit(tmp_path / "alice", live_server.url)


def test_a_token_from_stdin_is_checked_and_kept(alice):
    user = make_user("carol")
    token, secret = token_create(user=user, name="from the page", lifetime=timedelta(days=7), by=user)

    result = alice("login", "--server", alice.server, "--token", input=secret + "\n")

    assert result.returncode == 0, result.stderr
    assert "Logged in to" in result.stdout and "as carol with an API token" in result.stdout
    saved = json.loads(alice.config_path.read_text())
    assert saved["token"] == secret and saved["username"] == "carol"
    assert saved["expires_at"].startswith(token.expiry.strftime("%Y-%m-%dT%H:%M"))
    # Nothing secret on the command line, and the saved token works.
    status = alice("status")
    assert status.returncode == 0, status.stderr
    assert "carol" in status.stdout
    # Logging in with a token makes no token of its own.
    assert ApiToken.objects.count() == 1


def test_a_wrong_token_is_refused_and_nothing_is_saved(alice):
    result = alice("login", "--server", alice.server, "--token", input="jit_not-a-real-token\n")

    assert result.returncode == 3
    assert "refused the token" in one_line_error(result)
    assert not alice.config_path.exists()


def test_an_empty_token_is_a_usage_error(alice):
    result = alice("login", "--server", alice.server, "--token", input="\n")

    assert result.returncode == 2
    assert "empty" in one_line_error(result)


def test_password_login_keeps_working_where_it_is_on(alice):
    result = alice.login("alice")

    assert "as alice" in result.stdout


def test_password_login_where_it_is_off_says_to_use_a_token(alice, settings):
    settings.JITPORTAL_PASSWORD_LOGIN = False

    result = alice("login", "--server", alice.server, "--user", "alice", "--password-stdin", input="pw-correct-horse\n")

    assert result.returncode == 1
    line = one_line_error(result)
    assert "takes no passwords" in line and "jit login --server" in line and "--token" in line
    assert not ApiToken.objects.exists()


def test_at_a_terminal_the_token_is_asked_without_echo(alice):
    user = make_user("carol")
    _token, secret = token_create(user=user, name="t", by=user)
    master, replica = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "jitcli", "login", "--server", alice.server, "--token"],
        stdin=replica,
        stdout=subprocess.PIPE,
        stderr=replica,
        env=alice.env,
        cwd=alice.home,
    )
    os.close(replica)
    seen = b""
    deadline = time.monotonic() + 30
    while b"API token for" not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            seen += os.read(master, 1024)
    assert b"API token for" in seen, "no prompt at the terminal"
    # The prompt comes once echo is off, so what is typed now must not come back.
    os.write(master, secret.encode() + b"\n")
    stdout, _ = process.communicate(timeout=30)
    with contextlib.suppress(OSError):
        while chunk := os.read(master, 1024):
            seen += chunk
    os.close(master)

    assert process.returncode == 0, seen
    assert b"as carol" in stdout
    assert secret.encode() not in seen
    assert json.loads(alice.config_path.read_text())["token"] == secret
