"""The two halves of .ci/production that are easier in Python than in bash (standard library only).

    production_check.py receive PORT FILE   a webhook receiver: one JSON line per POST into FILE
    production_check.py drive               one request's whole life over HTTP (variables below)

``drive`` reads PORTAL (the base URL), RECEIVED (the receiver's file),
WEBHOOK_SECRET, and CHECK_READYZ_METRICS (``0`` only in a local try of the job
on code without those endpoints; CI never sets it). It prints what it sees and
exits non-zero, naming the step, at the first thing that is not as it should be.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def receive(port: int, path: str) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            entry = {"path": self.path, "headers": dict(self.headers.items()), "body": body.decode()}
            with open(path, "a") as out:
                out.write(json.dumps(entry) + "\n")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


class Failed(Exception):
    pass


def call(method: str, path: str, *, token: str | None = None, body: dict | None = None) -> tuple[int, dict, bytes]:
    """One HTTP call as a client behind the TLS proxy would make it (the proxy sets X-Forwarded-Proto)."""
    headers = {"X-Forwarded-Proto": "https", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    url = os.environ["PORTAL"] + path
    if not url.startswith("http://127.0.0.1:"):
        raise Failed(f"{url}: the job only talks to the portal it started on this machine")
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - checked above
            return answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as answer:
        return answer.code, dict(answer.headers.items()), answer.read()


def expect(step: str, status: int, want: int, content: bytes) -> None:
    if status != want:
        raise Failed(f"{step}: HTTP {status}, expected {want}: {content[:500]!r}")


def api(step: str, method: str, path: str, *, token: str | None = None, body: dict | None = None, want: int = 200):
    status, _, content = call(method, "/api/v1" + path, token=token, body=body)
    expect(step, status, want, content)
    return json.loads(content)


def token_for(username: str) -> str:
    answer = api(
        f"token for {username}",
        "POST",
        "/auth/token/",
        body={"username": username, "password": f"{username}-ci-pass"},
        want=201,
    )
    return answer["token"]


def wait_for(step: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise Failed(f"{step}: not seen within {timeout:.0f}s")
        time.sleep(0.5)


def received(event: str) -> list[dict]:
    try:
        with open(os.environ["RECEIVED"]) as lines:
            entries = [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        return []
    return [e for e in entries if e["headers"].get("X-Jitportal-Event") == event]


def signed(entry: dict) -> bool:
    secret = os.environ["WEBHOOK_SECRET"].encode()
    expected = "sha256=" + hmac.new(secret, entry["body"].encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, entry["headers"].get("X-Jitportal-Signature", ""))


def drive() -> None:
    # A page with the stylesheet: served only once collectstatic has run (the manifest storage).
    status, _, content = call("GET", "/accounts/login/")
    expect("the sign-in page", status, 200, content)
    stylesheet = next(iter(re.findall(rb'href="(/static/[^"]+\.css)"', content)), None)
    if stylesheet is None:
        raise Failed("the sign-in page links no stylesheet")
    status, _, content = call("GET", stylesheet.decode())
    expect(f"the stylesheet {stylesheet.decode()}", status, 200, content)
    print(f"  the sign-in page and {stylesheet.decode()} are served")

    alice, bob, carol, erin = (token_for(name) for name in ("alice", "bob", "carol", "erin"))

    created = api(
        "create the request",
        "POST",
        "/requests/",
        token=alice,
        body={"resources": ["node/web-1"], "reason": "CI-1 production check", "duration": "6s"},
        want=201,
    )
    request_id = created["id"]
    print(f"  request {request_id}: {created['state']}")
    for reviewer in (bob, carol):
        review = api(
            "approve",
            "POST",
            f"/requests/{request_id}/reviews/",
            token=reviewer,
            body={"decision": "approve"},
            want=201,
        )
        print(f"  {review['reviewer']} approved: request {review['request_state']}")
    if review["request_state"] != "approved":
        raise Failed(f"two approvals left the request {review['request_state']}")

    grants = api("the live grant", "GET", "/grants/?active=true", token=alice)["results"]
    if [g["request"] for g in grants] != [request_id] or grants[0]["state"] != "active":
        raise Failed(f"the live grant: {grants}")
    grant = grants[0]
    print(f"  grant {grant['id']}: {grant['state']} until {grant['expires_at']}")
    check = api("the access check", "GET", "/access-check/?resource=node/web-1&login=ubuntu", token=alice)
    if not check["allowed"]:
        raise Failed(f"the access check refused the live grant: {check}")

    # The sweep (beat -> sweeps worker) records the end: the audit event and the announcement.
    ended = wait_for(
        "the sweep's grant.ended audit event",
        lambda: [
            e
            for e in api("audit", "GET", "/audit/?action=grant.ended", token=erin)["results"]
            if e["target_id"] == str(grant["id"])
        ],
        timeout=60,
    )
    print(f"  grant.ended recorded at {ended[0]['created_at']}")
    for event in ("request.created", "grant.ended"):
        [entry] = wait_for(f"the {event} webhook", lambda event=event: received(event), timeout=30)
        if not signed(entry):
            raise Failed(f"the {event} webhook's signature does not match its body")
        if json.loads(entry["body"])["request"]["id"] != request_id:
            raise Failed(f"the {event} webhook is about another request: {entry['body'][:300]}")
        print(f"  webhook {event} delivered, signed")

    if os.environ.get("CHECK_READYZ_METRICS", "1") == "0":
        print("  /readyz and /metrics NOT checked (CHECK_READYZ_METRICS=0, a local try only)")
        return
    status, headers, content = call("GET", "/readyz")
    expect("/readyz", status, 200, content)
    print(f"  /readyz: {json.loads(content)}")
    status, headers, content = call("GET", "/metrics", token=erin)
    expect("/metrics", status, 200, content)
    if not headers.get("Content-Type", "").startswith("text/plain") or b"# TYPE " not in content:
        raise Failed(f"/metrics is not Prometheus text: {headers.get('Content-Type')} {content[:200]!r}")
    print(f"  /metrics: {content.count(b'# TYPE ')} metric families")


def main(argv: list[str]) -> int:
    if argv[:1] == ["receive"] and len(argv) == 3:
        receive(int(argv[1]), argv[2])
        return 0
    if argv == ["drive"]:
        try:
            drive()
        except Failed as failure:
            print(f"FAILED: {failure}", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
