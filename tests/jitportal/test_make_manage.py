"""`make manage ARGS=...`: the README's manage.py commands work as written on a fresh clone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def bare_env(tmp_path) -> dict[str, str]:
    """A shell with none of the settings: what a newcomer's terminal has."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "JITPORTAL_", "DATABASE_", "CELERY_", "CACHE_"))
    }
    env["JITPORTAL_DATA_DIR"] = str(tmp_path / "var")  # a fresh database, not the developer's
    return env


def make_manage(env: dict[str, str], args: str) -> subprocess.CompletedProcess:
    # -o: the virtualenv this test runs in is the one to use; never rebuild it here.
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "manage", f"ARGS={args}", f"PY={sys.executable}"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plain_manage_py_needs_the_settings(bare_env):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=bare_env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_make_manage_runs_a_command_with_the_development_defaults_on_a_fresh_database(bare_env):
    result = make_manage(bare_env, "apply -f demo/policy.yaml --dry-run")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run: nothing was written" in result.stdout


def test_readme_examples_run_manage_py_through_make():
    readme = (BASE_DIR / "README.md").read_text()
    # Production runs manage.py itself, with the real settings in its environment.
    start = readme.index("\n## Production\n")
    development = readme[:start] + readme[readme.index("\n## ", start + 1) :]
    blocks = re.findall(r"```sh\n(.*?)```", development, flags=re.S)

    direct = [line for block in blocks for line in block.splitlines() if re.search(r"\bmanage\.py\b", line)]

    assert direct == []
    assert 'make manage ARGS="apply -f demo/policy.yaml"' in readme
