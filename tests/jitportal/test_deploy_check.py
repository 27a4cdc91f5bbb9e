"""Production settings pass Django's deployment check with warnings treated as failures."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def production_env(tmp_path) -> dict[str, str]:
    """What a production deployment sets, and nothing from the development defaults."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "jitportal.settings",
        "JITPORTAL_DATA_DIR": str(tmp_path / "var"),
        "DJANGO_SECRET_KEY": "k3Yf9-pXw2Lq8Zr!vT6mN0bH4sJ7cD1eG5uA9yR3oI8wE2qP6zX",
        "JITPORTAL_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "JITPORTAL_AUDIT_KEY": Fernet.generate_key().decode(),
        "JITPORTAL_AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
        "DJANGO_ALLOWED_HOSTS": "jit.example.com",
    }


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_settings_pass_the_deploy_check_at_warning_level(production_env):
    result = manage(production_env, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_deploy_check_fails_on_a_weak_secret_key(production_env):
    weak = {**production_env, "DJANGO_SECRET_KEY": "too-short"}

    result = manage(weak, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode != 0
    assert "security.W009" in result.stderr


@pytest.mark.parametrize(("value", "preload", "silenced"), [(None, False, ["security.W021"]), ("1", True, [])])
def test_hsts_preload_is_off_unless_asked_and_the_check_passes_either_way(production_env, value, preload, silenced):
    env = production_env if value is None else {**production_env, "JITPORTAL_HSTS_PRELOAD": value}
    shown = manage(
        env,
        "shell",
        "-c",
        "from django.conf import settings; print(settings.SECURE_HSTS_PRELOAD, settings.SILENCED_SYSTEM_CHECKS)",
    )

    assert shown.stdout.strip().splitlines()[-1] == f"{preload} {silenced}", shown.stderr
    assert manage(env, "check", "--deploy", "--fail-level", "WARNING").returncode == 0


def test_a_complete_oidc_configuration_passes_the_deploy_check(production_env):
    env = {
        **production_env,
        "JITPORTAL_OIDC_ISSUER": "https://idp.example.com",
        "JITPORTAL_OIDC_CLIENT_ID": "jitportal",
        "JITPORTAL_OIDC_CLIENT_SECRET": "s3cret-from-the-provider",
        "JITPORTAL_PASSWORD_LOGIN": "0",
    }

    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"JITPORTAL_OIDC_ISSUER": "https://idp.example.com", "JITPORTAL_OIDC_CLIENT_ID": "jitportal"}, "E001"),
        (
            {
                "JITPORTAL_OIDC_ISSUER": "http://idp.example.com",
                "JITPORTAL_OIDC_CLIENT_ID": "jitportal",
                "JITPORTAL_OIDC_CLIENT_SECRET": "s3cret",
            },
            "W002",
        ),
        (
            {
                "JITPORTAL_OIDC_ISSUER": "https://idp.example.com",
                "JITPORTAL_OIDC_CLIENT_ID": "jitportal",
                "JITPORTAL_OIDC_CLIENT_SECRET": "s3cret",
                "JITPORTAL_OIDC_SCOPES": "profile email",
            },
            "E003",
        ),
        ({"JITPORTAL_PASSWORD_LOGIN": "0"}, "E004"),
    ],
    ids=["half-configured", "plain-http-issuer", "no-openid-scope", "no-way-to-sign-in"],
)
def test_the_deploy_check_names_an_incomplete_sign_in_configuration(production_env, extra, problem):
    result = manage({**production_env, **extra}, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode != 0
    assert f"jitportal.{problem}" in result.stderr
