"""The README's Production section, the CI job that runs it, and the locks it installs agree."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETTINGS_READERS = [REPO / "jitportal" / "settings.py", REPO / "jitportal" / "gunicorn_config.py"]
# Required in production by the audit log's keys; set by the CI job and listed in the README.
ALSO_DOCUMENTED = {"JITPORTAL_AUDIT_KEY", "JITPORTAL_AUDIT_SIGNING_KEY", "DJANGO_SETTINGS_MODULE"}


def production_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Production\n")
    return text[start : text.index("\n## ", start + 1)]


def variables_read() -> set[str]:
    names: set[str] = set()
    for path in SETTINGS_READERS:
        source = path.read_text()
        names |= set(re.findall(r"env_\w+\(\s*\"([A-Z][A-Z0-9_]+)\"", source))
        names |= set(re.findall(r"os\.environ\.get\(\"([A-Z][A-Z0-9_]+)\"", source))
    return names


def test_the_production_section_names_every_variable_the_settings_read():
    names = variables_read()
    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "JITPORTAL_LOG_FORMAT"} <= names  # the reading works
    section = production_section()
    assert sorted(n for n in names | ALSO_DOCUMENTED if f"`{n}`" not in section) == []


def test_the_ci_job_sets_only_documented_variables_and_every_secret():
    job = (REPO / ".ci" / "production").read_text()
    exported = set(re.findall(r"\b((?:DJANGO|JITPORTAL|CELERY|CACHE|DATABASE)_[A-Z0-9_]+)=", job))
    section = production_section()
    assert sorted(n for n in exported if f"`{n}`" not in section) == []
    assert {"DJANGO_SECRET_KEY", "JITPORTAL_ENCRYPTION_KEYS", "JITPORTAL_AUDIT_KEY"} <= exported
    assert "JITPORTAL_AUDIT_SIGNING_KEY" in exported
    assert "DJANGO_DEBUG=" not in job


def commands(text: str) -> list[str]:
    """The gunicorn and celery command lines of a shell text, continuation lines joined, paths dropped."""
    joined = re.sub(r"\\\n\s*", " ", text).replace('"', "").replace("$VENV/bin/", "")
    return re.findall(r"^\s*(?:start [\w-]+ )?((?:gunicorn|celery) .*?)\s*$", joined, re.M)


def test_the_ci_job_starts_the_processes_the_readme_lays_out():
    readme = commands(production_section())
    job = commands((REPO / ".ci" / "production").read_text())
    assert len(readme) == 4
    for line in readme:
        program = line.split(" jitportal.wsgi")[0] if line.startswith("gunicorn") else " ".join(line.split()[:5])
        queue = re.search(r"-Q (\w+)", line)
        # The job may prefix the queue names for a local try beside another run (PROD_CI_QUEUE); CI does not.
        named = re.compile(rf'-Q "?(\$\{{QUEUE_PREFIX:\+\$QUEUE_PREFIX-\}})?{queue.group(1)}\b') if queue else None
        matching = [j for j in job if j.startswith(program) and (not named or named.search(j))]
        assert matching, f"the CI job runs nothing like: {line}"
    assert "--workers 3" in " ".join(j for j in job if j.startswith("gunicorn"))
    assert sum(" beat " in f" {j} " for j in job) == 1


def requirement_lines(path: Path) -> dict[str, str]:
    """name -> version of every requirement in a lock (continuation lines folded)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    pins: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", " ", "-")):
            match = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)(.*)", line)
            assert match, f"{path.name}: not a pinned requirement: {line}"
            assert "--hash=sha256:" in match.group(3), f"{path.name}: no hash for {match.group(1)}"
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def direct_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def test_the_locks_pin_every_package_with_hashes_and_dev_is_a_superset_of_runtime():
    runtime = requirement_lines(REPO / "requirements.txt")
    dev = requirement_lines(REPO / "requirements-dev.txt")
    # The direct dependencies at the versions asked for, and what kombu's Redis transport imports.
    assert direct_pins(REPO / "requirements.in").items() <= runtime.items()
    assert {"packaging", "kombu", "amqp", "billiard", "vine"} <= runtime.keys()
    assert direct_pins(REPO / "requirements-dev.in").items() <= dev.items()
    assert runtime.items() <= dev.items()
