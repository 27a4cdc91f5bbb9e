"""The README's API walk-through, run as written against a live portal with the demo policy.

Every ``# =>`` line of the block is the part of the answer the README shows;
each is checked against what the command really printed, so the walk-through
cannot drift from the product.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command

from accounts.models import ApiToken
from requests_app.models import AccessRequest, Grant

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
INTRO = "A walk-through against `make run`"
EXPECT, CONTINUED = re.compile(r"^# => (.*)$"), re.compile(r"^#\s{2,}(.*)$")
MARKER = "@@step"

pytestmark = pytest.mark.django_db(transaction=True)


def walkthrough() -> str:
    text = README.read_text()
    after = text[text.index(INTRO) :]
    return re.search(r"```sh\n(.*?)```", after, re.S).group(1)


def steps(block: str) -> list[tuple[str, object]]:
    """The block cut after each command that shows its answer: (shell code, the answer shown or None)."""
    out: list[tuple[str, object]] = []
    code: list[str] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        shown = EXPECT.match(lines[i])
        if not shown:
            code.append(lines[i])
            i += 1
            continue
        parts = [shown.group(1)]
        i += 1
        while i < len(lines) and CONTINUED.match(lines[i]):
            parts.append(CONTINUED.match(lines[i]).group(1))
            i += 1
        out.append(("\n".join(code), json.loads(" ".join(parts))))
        code = []
    out.append(("\n".join(code), None))
    return out


def contains(actual, shown) -> bool:
    """``shown`` is part of ``actual``: keys it names match, items it lists are there (the rest left out)."""
    if isinstance(shown, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in shown.items())
    if isinstance(shown, list):
        if not isinstance(actual, list):
            return False
        left = list(actual)
        for item in shown:
            match = next((a for a in left if contains(a, item)), None)
            if match is None:
                return False
            left.remove(match)
        return True
    return actual == shown


def run_walkthrough(server: str) -> list[tuple[object, str]]:
    """Runs the block in one bash as a reader would paste it; returns (answer shown, what was printed) per step."""
    assert shutil.which("curl") and shutil.which("python3"), "the walk-through needs curl and python3"
    block = walkthrough().replace("http://127.0.0.1:8000", server, 1)
    parts = steps(block)
    script = "set -e -o pipefail\n" + "\n".join(
        f"{code}\nprintf '\\n{MARKER} {n}\\n'" for n, (code, _) in enumerate(parts)
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    printed = re.split(rf"\n{MARKER} \d+\n", "\n" + result.stdout)
    # Text before the first marker is the first step's output, and so on; the last split is empty.
    outputs = [chunk.strip() for chunk in printed[:-1]]
    outputs[0] = outputs[0].removeprefix("\n")
    return [(shown, output) for (_, shown), output in zip(parts, outputs, strict=True)]


def test_the_block_shows_two_approvals_the_grants_and_access_turning_allowed_then_revoked():
    shown = [expected for _, expected in steps(walkthrough()) if expected is not None]
    checks = [s for s in shown if isinstance(s, dict) and "allowed" in s]
    assert [c["allowed"] for c in checks] == [False, True, False, True]
    reviews = [s for s in shown if isinstance(s, dict) and "request_state" in s]
    assert [(r["reviewer"], r["request_state"]) for r in reviews] == [("bob", "pending"), ("carol", "approved")]
    assert any(isinstance(s, dict) and s.get("revoked_by") == "erin" for s in shown)


def test_the_readme_walkthrough_runs_as_written_and_answers_what_it_shows(live_server):
    call_command("apply", "-f", str(REPO / "demo" / "policy.yaml"), stdout=io.StringIO())

    answers = run_walkthrough(live_server.url)

    checked = 0
    for shown, printed in answers:
        if shown is None:
            continue
        actual = json.loads(printed)
        assert contains(actual, shown), f"the README shows {shown}, the portal answered {actual}"
        checked += 1
    assert checked == 11
    request = AccessRequest.objects.get(reason="INC-4211 disk full")
    assert request.state == AccessRequest.State.APPROVED
    assert sorted(request.reviews.values_list("reviewer__username", flat=True)) == ["bob", "carol"]
    revoked = Grant.objects.get(revoked_at__isnull=False)
    assert (revoked.resource.name, revoked.revoked_by.username) == ("web-1", "erin")
    assert AccessRequest.objects.get(reason="INC-4212 slow disk").state == AccessRequest.State.CANCELLED
    # The last step revoked alice's token.
    assert not ApiToken.objects.filter(user__username="alice").exists()
