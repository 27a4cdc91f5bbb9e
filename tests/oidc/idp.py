"""A real OpenID provider for the tests: npm's ``oidc-provider`` (``provider.js`` here), run with node.

``npm ci`` installs it from the lock into this directory the first time;
without node or npm the tests are skipped on a laptop and fail under CI=true,
as the sshd tests do. ``sign_in`` walks its login and consent pages the way a
browser would, with ``requests``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

HERE = Path(__file__).resolve().parent
CLIENT_ID = "jitportal"
CLIENT_SECRET = "jitportal-test-client-secret-0123456789"  # provider.js's static test client


def require_node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return node, npm
    message = "node and npm are not installed (apt-get install nodejs npm)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; .ci/run should have installed them")
    pytest.skip(message)


def install_provider(npm: str) -> None:
    """``npm ci`` from the lock, once: node_modules stays between runs."""
    if (HERE / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm ci failed in {HERE}:\n{result.stdout}\n{result.stderr}")


@dataclass
class Provider:
    """One running provider; ``users`` (login -> claims) is re-read by it at every sign-in."""

    directory: Path
    redirect_uris: list[str]
    issuer: str = ""
    process: subprocess.Popen | None = None
    users: dict = field(default_factory=dict)

    @property
    def users_file(self) -> Path:
        return self.directory / "users.json"

    def set_user(self, login: str, **claims) -> None:
        self.users[login] = claims
        self.users_file.write_text(json.dumps(self.users))

    def start(self) -> None:
        node, npm = require_node()
        install_provider(npm)
        self.users_file.write_text(json.dumps(self.users))
        log = open(self.directory / "provider.log", "w")  # noqa: SIM115 - node writes to it
        env = {
            **os.environ,
            "PORT": "0",
            "REDIRECT_URIS": ",".join(self.redirect_uris),
            "USERS_FILE": str(self.users_file),
        }
        self.process = subprocess.Popen(
            [node, str(HERE / "provider.js")], cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=log, text=True
        )
        log.close()
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and not line.startswith("listening "):
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line and self.process.poll() is not None:
                break
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the OpenID provider did not start:\n{(self.directory / 'provider.log').read_text()}")
        self.issuer = line.split()[1]
        # Ready once discovery answers.
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the OpenID provider's discovery document never answered")

    def metadata(self) -> dict:
        return requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=5).json()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def start_provider(directory: Path, redirect_uris: list[str]) -> Provider:
    directory.mkdir(parents=True, exist_ok=True)
    provider = Provider(directory=directory, redirect_uris=redirect_uris)
    provider.start()
    return provider


def _form(page: requests.Response) -> tuple[str, dict[str, str]]:
    """The provider's one form on a login or consent page: its action and the prompt it answers."""
    action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
    prompt = re.search(r'name="prompt" value="([^"]+)"', page.text)
    assert action and prompt, page.text[:2000]
    return urllib.parse.urljoin(page.url, action.group(1)), {"prompt": prompt.group(1)}


def provider_walk(session: requests.Session, authorize_url: str, *, login: str, portal: str) -> str:
    """Follow the provider from the authorization request to the redirect back to ``portal``; returns that URL.

    Submits the login page (any password: the development pages check
    none) and the consent page as a person would.
    """
    response = session.get(authorize_url, allow_redirects=False, timeout=10)
    for _step in range(20):
        if response.is_redirect:
            target = urllib.parse.urljoin(response.url, response.headers["Location"])
            if target.startswith(portal):
                return target
            response = session.get(target, allow_redirects=False, timeout=10)
            continue
        assert response.status_code == 200, response.text[:2000]
        action, data = _form(response)
        if data["prompt"] == "login":
            data.update(login=login, password="any")
        response = session.post(action, data=data, allow_redirects=False, timeout=10)
    raise AssertionError("the provider never sent the browser back to the portal")
