"""What each ``jit`` command does. Output goes to stdout; progress and notices to stderr."""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shlex
import socket
import sys
import time
import urllib.parse
import uuid

from jitcli import config as config_file
from jitcli.api import Api, ApiError, normalize_server
from jitcli.errors import INTERRUPTED, NOT_GRANTED, NOT_LOGGED_IN, USAGE, CliError
from jitcli.output import err, labels, local, now, parse_time, refs, shorten, span, table, time_left
from jitcli.ssh import ephemeral_key, parse_address, run, ssh_command

FINAL_STATES = {"denied", "cancelled", "expired", "revoked"}
DEFAULT_POLL_SECONDS = 2.0
# The access check's code for "no grant covers it", the one refusal that a request can cure.
NO_GRANT = "no_grant"
# A request ID as the API routes it: a UUID, dashes optional.
REQUEST_ID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
# A search listing more than this proposes one example instead of a command naming them all.
REQUEST_HINT_MOST = 10


def _interactive() -> bool:
    return sys.stdin.isatty()


def _ask(prompt: str) -> str:
    """A question at the terminal, on stderr so stdout stays the command's output."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise CliError("no answer (end of input)")
    return line.strip()


def _session() -> tuple[config_file.Config, Api]:
    config = config_file.load()
    if not config.server or not config.token:
        raise CliError("not logged in; run: jit login --server URL", exit_code=NOT_LOGGED_IN)
    return config, Api(config.server, config.token)


def _poll_seconds() -> float:
    try:
        return max(0.05, float(os.environ.get("JIT_POLL_INTERVAL", DEFAULT_POLL_SECONDS)))
    except ValueError:
        return DEFAULT_POLL_SECONDS


# --- login, logout, status ----------------------------------------------------------------


def _read_password(args, username: str, server: str) -> str:
    if args.password_stdin:
        password = sys.stdin.read()
        # Only the line ending a script or a pipe adds; other whitespace may be part of the password.
        password = password.removesuffix("\n").removesuffix("\r")
    elif _interactive():
        password = getpass.getpass(f"Password for {username} at {server}: ")
    else:
        raise CliError("no terminal to ask for the password; pipe it in with --password-stdin", exit_code=USAGE)
    if not password:
        raise CliError("the password is empty", exit_code=USAGE)
    return password


# The token endpoint's code when the portal takes no passwords (SSO only).
PASSWORD_LOGIN_DISABLED = "password_login_disabled"  # noqa: S105 - an error code, not a password


def _read_token(server: str) -> str:
    if _interactive():
        token = getpass.getpass(f"API token for {server} (from its API tokens page): ")
    else:
        token = sys.stdin.read()
    token = token.strip()
    if not token:
        raise CliError("the token is empty", exit_code=USAGE)
    return token


def _warn_plain_http(server: str, what: str) -> None:
    host = urllib.parse.urlsplit(server).hostname or ""
    if server.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
        err(f"warning: {server} is plain HTTP; {what} cross the network unencrypted")


def _login_with_token(server: str, user: str | None) -> int:
    """Check a token made on the portal (``GET me/``) and keep it as a password login keeps its own."""
    token = _read_token(server)
    try:
        me = Api(server, token).get("me/")
    except ApiError as exc:
        if exc.code in ("authentication_failed", "not_authenticated"):
            raise CliError(
                f"{server} refused the token (wrong, revoked or expired); create one on its API tokens page",
                exit_code=NOT_LOGGED_IN,
            ) from None
        raise CliError(f"login to {server} failed: {exc.message}") from None
    if user and me["username"] != user:
        raise CliError(f"the token belongs to {me['username']}, not {user}", exit_code=USAGE)
    expiry = me.get("token_expires_at")
    path = config_file.save(config_file.Config(server=server, token=token, username=me["username"], expires_at=expiry))
    _warn_plain_http(server, "your token and requests")
    until = f"; the token expires {local(expiry)} (in {time_left(expiry)})" if expiry else ""
    print(f"Logged in to {server} as {me['username']} with an API token{until}.")
    print(f"Saved in {path}.")
    return 0


def login(args) -> int:
    saved = config_file.load()
    server = args.server or saved.server
    if not server:
        raise CliError("give the portal's URL: jit login --server https://jit.example.com", exit_code=USAGE)
    server = normalize_server(server)
    if getattr(args, "token", False):
        return _login_with_token(server, args.user)
    username = args.user
    if not username:
        default = getpass.getuser()
        asked = _ask(f"Username [{default}]: ") if _interactive() and not args.password_stdin else ""
        username = asked or default
    password = _read_password(args, username, server)
    api = Api(server)
    try:
        body = api.post(
            "auth/token/",
            {"username": username, "password": password, "name": f"jit on {socket.gethostname()}"[:100]},
            auth=False,
        )
    except ApiError as exc:
        if exc.code == PASSWORD_LOGIN_DISABLED:
            raise CliError(
                f"{server} takes no passwords (single sign-on only): create a token on its API tokens page "
                f"({server}/accounts/tokens/), then run: jit login --server {server} --token"
            ) from None
        raise CliError(f"login to {server} failed: {exc.message}") from None
    on_file = _config_without_environment()
    path = config_file.save(
        config_file.Config(
            server=server, token=body["token"], username=body["username"], expires_at=body.get("expires_at")
        )
    )
    # The token this login replaces is revoked, so logging in again does not pile up live tokens.
    if on_file.token and on_file.server == server and on_file.token != body["token"]:
        with contextlib.suppress(CliError):
            Api(server, on_file.token).delete("auth/token/")
    _warn_plain_http(server, "your password and token")
    expiry = body.get("expires_at")
    until = f"; the token expires {local(expiry)} (in {time_left(expiry)})" if expiry else ""
    print(f"Logged in to {server} as {body['username']}{until}.")
    print(f"Saved in {path}.")
    return 0


def _config_without_environment() -> config_file.Config:
    saved = {name: os.environ.pop(name, None) for name in ("JIT_SERVER", "JIT_TOKEN")}
    try:
        return config_file.load()
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def logout(args) -> int:
    config = _config_without_environment()
    if not config.server or not config.token:
        print("Not logged in.")
        return 0
    try:
        Api(config.server, config.token).delete("auth/token/")
    except ApiError as exc:
        # Already unusable (expired, revoked, or not sent): nothing left to revoke.
        if exc.code not in ("token_missing", "not_authenticated", "authentication_failed"):
            err(f"warning: the portal did not revoke the token ({exc.message}); it expires {local(config.expires_at)}")
    except CliError as exc:
        err(f"warning: could not revoke the token ({exc.message}); it expires {local(config.expires_at)}")
    config.token = None
    config.expires_at = None
    config_file.save(config)
    print(f"Logged out of {config.server}.")
    return 0


def _grant_end(grant: dict) -> str:
    """When the grant ends: how long is left while active, otherwise the moment itself."""
    state = grant["state"]
    if state == "active":
        return f"in {time_left(grant['expires_at'])}"
    if state == "revoked":
        return local(grant.get("revoked_at"))
    if state == "scheduled":
        return f"{local(grant['expires_at'])} (starts {local(grant['starts_at'])})"
    return local(grant["expires_at"])


def _grant_rows(grants: list[dict]) -> list[list[str]]:
    return [
        [
            str(g["id"]),
            g["role"],
            g["resource"]["ref"] if g.get("resource") else f"(role {g['role']})",
            ",".join(g.get("logins") or []) or "-",
            g["state"],
            _grant_end(g),
        ]
        for g in grants
    ]


GRANT_HEADERS = ["ID", "Role", "Resource", "Logins", "State", "Ends"]


def status(args) -> int:
    config, api = _session()
    me = api.get("me/")
    grants, _ = api.get_all("grants/", [("active", "true"), ("user", me["username"])])
    pending = api.get("requests/", [("scope", "mine"), ("state", "pending"), ("page_size", 1)])
    groups = ", ".join(me.get("groups") or []) or "no groups"
    print(f"Server:  {api.server}")
    # What the account may do beyond requesting: capabilities, then the staff flag (configuration only).
    held = [*(me.get("capabilities") or []), *(["staff"] if me.get("is_staff") else [])]
    suffix = f" [{', '.join(held)}]" if held else ""
    print(f"User:    {me['username']} ({groups}){suffix}")
    if config.expires_at:
        print(f"Token:   expires {local(config.expires_at)} (in {time_left(config.expires_at)})")
    print()
    if grants:
        print("Active grants:")
        table(GRANT_HEADERS, _grant_rows(grants))
    else:
        print("Active grants: none")
    count = pending.get("count", 0)
    if count:
        print(f"\nPending requests: {count} (jit request ls --state pending)")
    return 0


# --- search -----------------------------------------------------------------------------------


def search(args) -> int:
    _, api = _session()
    for selector in args.label:
        if "=" not in selector or not selector.split("=", 1)[0].strip():
            raise CliError(f"--label {selector!r}: use KEY=VALUE, e.g. --label env=prod", exit_code=USAGE)
    params = [("kind", args.kind), *[("label", s) for s in args.label], ("search", args.text.strip())]
    items, total = api.get_all("resources/", params)
    if not items:
        print("No resources found that you may request access to.")
        return 0
    rows = [
        [r["kind"], r["name"], r.get("address") or "-", labels(r.get("labels")), ",".join(r["requestable_roles"])]
        for r in items
    ]
    table(["Kind", "Name", "Address", "Labels", "Requestable roles"], rows)
    narrowed = bool(args.kind or args.label or args.text.strip())
    if total is None or total > len(items):
        of = "more" if total is None else total
        print(f"\n(showing {len(items)} of {of}; narrow the search with --kind, --label or TEXT)")
    elif not narrowed and len(items) > 1:
        print("\n(everything you may search; narrow it with --kind, --label or TEXT)")
    if narrowed and total == len(items) <= REQUEST_HINT_MOST:
        resources = " ".join(f"--resource {shlex.quote(r['kind'] + '/' + r['name'])}" for r in items)
        print("\nTo request access to these resources, run")
        print(f"> jit request create {resources} --reason <reason>")
    else:
        # Proposing every resource listed would invite asking for far more than the task needs.
        example = shlex.quote(f"{items[0]['kind']}/{items[0]['name']}")
        print("\nTo request access, name only the resources you need, e.g.")
        print(f"> jit request create --resource {example} --reason <reason>")
    several = [f"{r['kind']}/{r['name']}" for r in items if len(r["requestable_roles"]) > 1]
    if several:
        print(f"(several roles reach {', '.join(several[:3])}: add --role NAME to choose)")
    return 0


# --- requests ----------------------------------------------------------------------------------


def _resource_ref(ref: str) -> int | str:
    ref = ref.strip()
    if ref.isascii() and ref.isdigit():  # not "²": int() refuses it
        return int(ref)
    kind, sep, name = ref.partition("/")
    if not (sep and kind and name):
        raise CliError(f"{ref!r}: name a resource by id or as kind/name, e.g. node/web-1", exit_code=USAGE)
    return ref


def _create_request(api: Api, body: dict) -> dict:
    """POST the request; when a role needs a reason and none was given, ask for one at a terminal."""
    try:
        return api.post("requests/", body)
    except ApiError as exc:
        needed = exc.field_errors("reason")
        if not needed or body.get("reason") or not _interactive():
            if needed and not body.get("reason"):
                raise CliError(f"{needed[0]}; give one with --reason") from None
            raise
    err(f"{needed[0][0].upper()}{needed[0][1:]}.")
    reason = _ask("Reason: ")
    if not reason:
        raise CliError("no reason given; nothing was requested")
    return api.post("requests/", {**body, "reason": reason})


def _progress(request: dict) -> str:
    return f"{request.get('approvals', 0)} of {request.get('approvals_required', 1)} approvals"


def _print_request(request: dict) -> None:
    print(f"Request ID: {request['id']}")
    state = request["state"]
    print(f"State:      {state}{f' ({_progress(request)})' if state == 'pending' else ''}")
    print(f"Roles:      {', '.join(request.get('roles') or []) or '-'}")
    print(f"Resources:  {refs(request.get('resources') or [], most=10)}")


def _refusal(request: dict) -> str:
    rid, state = request["id"], request["state"]
    why = request.get("resolution_reason") or ""
    if state == "denied":
        deniers = [r["reviewer"] for r in request.get("reviews") or [] if r["decision"] == "deny"]
        by = f" by {', '.join(deniers)}" if deniers else ""
        return f"request {rid} was denied{by}{f': {why}' if why else ''}"
    if state == "expired":
        return f"request {rid} expired before enough reviewers approved it ({_progress(request)})"
    if state == "cancelled":
        return f"request {rid} was cancelled{f': {why}' if why else ''}"
    return f"access from request {rid} was revoked{f': {why}' if why else ''}"


def _wait(api: Api, request: dict) -> dict:
    """Poll until approved (returned) or refused (CliError); progress on stderr as it changes."""
    rid = request["id"]
    shown = None
    try:
        while True:
            state = request["state"]
            if state == "approved":
                return request
            if state in FINAL_STATES:
                raise CliError(_refusal(request), exit_code=NOT_GRANTED)
            progress = _progress(request)
            if progress != shown:
                err(f"Waiting for approval of request {rid}: {progress}")
                shown = progress
            # The portal's sweep may lag; the pending expiry is a fact either way.
            expires = parse_time(request.get("pending_expires_at"))
            if expires is not None and now() >= expires:
                raise CliError(
                    f"request {rid} expired before enough reviewers approved it ({progress})", exit_code=NOT_GRANTED
                )
            time.sleep(_poll_seconds())
            request = api.get(f"requests/{rid}/")
    except KeyboardInterrupt:
        raise CliError(
            f"stopped waiting; request {rid} is still pending (jit request cancel {rid} withdraws it)",
            exit_code=INTERRUPTED,
        ) from None


def request_create(args) -> int:
    _, api = _session()
    resources = [_resource_ref(r) for r in args.resource]
    if not resources and not args.role:
        raise CliError("name what you need: --resource KIND/NAME or --role NAME", exit_code=USAGE)
    body: dict = {"resources": resources, "roles": args.role, "suggested_reviewers": args.reviewer}
    if args.reason is not None:
        body["reason"] = args.reason
    if args.duration:
        body["duration"] = args.duration
    if args.start_time:
        body["start_time"] = args.start_time
    created = _create_request(api, body)
    _print_request(created)
    if not args.wait:
        return 0
    approved = _wait(api, created)
    print(f"\nApproved ({_progress(approved)}). Grants:")
    table(GRANT_HEADERS, _grant_rows(approved.get("grants") or []))
    return 0


def request_ls(args) -> int:
    _, api = _session()
    params = [("scope", "review" if args.review else "mine"), *[("state", s) for s in args.state]]
    items, total = api.get_all("requests/", params)
    if not items:
        print("No requests." if not args.review else "No requests for you to review.")
        return 0
    rows = [
        [
            r["id"],
            r["requester"],
            r["state"],
            f"{r['approvals']}/{r['approvals_required']}",
            ",".join(r["roles"]),
            refs(r["resources"], most=2),
            local(r["created_at"]),
            shorten(r.get("reason") or "", 40),
        ]
        for r in items
    ]
    table(["ID", "Requester", "State", "Approvals", "Roles", "Resources", "Created", "Reason"], rows)
    if total is not None and total > len(items):
        print(f"\n(showing {len(items)} of {total}; filter with --state)")
    return 0


def _request_path(rid: str, action: str = "") -> str:
    rid = rid.strip()
    if not rid or "/" in rid or "?" in rid:
        raise CliError(f"{rid!r} is not a request ID", exit_code=USAGE)
    if not REQUEST_ID.fullmatch(rid):
        # The API routes only UUIDs (its schema says so): anything else is no request, and no API answer to read.
        raise CliError(f"no such request: {rid}")
    return f"requests/{urllib.parse.quote(rid)}/{action}"


def _request_call(call, rid: str):
    """One call on a request; a request that does not exist, or that you may not see, is said plainly."""
    try:
        return call()
    except ApiError as exc:
        if exc.code == "not_found":
            raise CliError(f"no such request: {rid.strip()}") from None
        raise


def _resolution(r: dict) -> str:
    """The resolution's time with its own reason; an approving reviewer's reason is in the reviews."""
    state, when, why = r["state"], local(r["resolved_at"]), r.get("resolution_reason") or ""
    if state in ("approved", "revoked"):
        # A revoked request was approved first; its revocation has its own line.
        how = "approved" if r.get("approvals") else "approved without review"
        return f"{when} ({how})"
    return f"{when} ({state}{f': {why}' if why else ''})"


def _revocation(r: dict) -> str:
    """When the last live grant was revoked, by whom and why (the request turned revoked then)."""
    revoked = [g for g in r.get("grants") or [] if g.get("revoked_at")]
    if not revoked:
        return r.get("resolution_reason") or "-"
    last = max(revoked, key=lambda g: g["revoked_at"])
    by = f" by {last['revoked_by']}" if last.get("revoked_by") else ""
    why = f": {last['revoke_reason']}" if last.get("revoke_reason") else ""
    return f"{local(last['revoked_at'])} (revoked{by}{why})"


def request_show(args) -> int:
    _, api = _session()
    r = _request_call(lambda: api.get(_request_path(args.id)), args.id)
    print(f"Request:    {r['id']}")
    print(f"Requester:  {r['requester']}")
    print(f"State:      {r['state']}")
    if r.get("extends"):
        print(f"Extends:    {r['extends']}")
    print(f"Roles:      {', '.join(r['roles'])}")
    print(f"Resources:  {refs(r['resources'], most=20)}")
    print(f"Reason:     {r.get('reason') or '-'}")
    print(f"Duration:   {span(r['duration'])}")
    if r.get("start_time"):
        print(f"Starts:     {local(r['start_time'])}")
    print(f"Approvals:  {r['approvals']} of {r['approvals_required']}")
    print(f"Denials:    {r['denials']} of {r['denials_required']}")
    print(f"Created:    {local(r['created_at'])}")
    if r["state"] == "pending":
        print(f"Expires:    {local(r['pending_expires_at'])} if not decided")
    if r.get("resolved_at"):
        print(f"Resolved:   {_resolution(r)}")
    if r["state"] == "revoked":
        print(f"Revoked:    {_revocation(r)}")
    if r.get("break_glass"):
        by = f" by {r['post_reviewed_by']}" if r.get("post_reviewed_by") else ""
        why = f": {r['post_review_reason']}" if r.get("post_review_reason") else ""
        print(f"Break-glass: post-review {r.get('post_review')}{by}{why}")
    if r.get("suggested_reviewers"):
        print(f"Suggested:  {', '.join(r['suggested_reviewers'])}")
    if r.get("reviews"):
        print("\nReviews:")
        table(
            ["Reviewer", "Decision", "When", "Reason"],
            [
                [v["reviewer"], v["decision"], local(v["created_at"]), shorten(v.get("reason") or "", 60)]
                for v in r["reviews"]
            ],
        )
    if r.get("grants"):
        print("\nGrants:")
        table(GRANT_HEADERS, _grant_rows(r["grants"]))
    return 0


def request_cancel(args) -> int:
    _, api = _session()
    r = _request_call(lambda: api.post(_request_path(args.id, "cancel/")), args.id)
    print(f"Request {r['id']} cancelled.")
    return 0


def request_review(args) -> int:
    _, api = _session()
    decision = "approve" if args.approve else "deny"
    body = {"decision": decision, "reason": args.reason}
    if args.duration:
        if decision != "approve":
            raise CliError("--duration shortens an approval; it cannot go with --deny", exit_code=USAGE)
        body["duration"] = args.duration
    review = _request_call(lambda: api.post(_request_path(args.id, "reviews/"), body), args.id)
    state = review.get("request_state", "")
    verb = "Approved" if decision == "approve" else "Denied"
    detail = f"it is now {state}"
    if state == "pending":
        try:
            detail = f"it is still pending ({_progress(api.get(_request_path(args.id)))})"
        except CliError:
            detail = "it is still pending"
    print(f"{verb} request {args.id}; {detail}.")
    return 0


def request_extend(args) -> int:
    _, api = _session()
    body: dict = {}
    if args.duration:
        body["duration"] = args.duration
    if args.reason is not None:
        body["reason"] = args.reason
    extension = _request_call(lambda: api.post(_request_path(args.id, "extend/"), body), args.id)
    print(f"Extension of request {extension['extends']}:")
    _print_request(extension)
    if extension["state"] == "pending":
        print(f"It waits for review until {local(extension['pending_expires_at'])}, when your access ends.")
    return 0


def request_drop(args) -> int:
    """Give access back now: every live grant of the request, or with --grant only that one."""
    _, api = _session()
    reason = {"reason": args.reason or ""}
    if args.grant is not None:
        _request_path(args.id)  # a malformed request ID is refused before any call
        try:
            grant = api.get(f"grants/{args.grant}/")
        except ApiError as exc:
            if exc.code == "not_found":
                raise CliError(f"no such grant: {args.grant}") from None
            raise
        if grant.get("request") != str(uuid.UUID(args.id.strip())):
            raise CliError(f"grant {args.grant} is not part of request {args.id.strip()}")
        api.post(f"grants/{args.grant}/drop/", reason)
        print(f"Grant {args.grant} given back; it has ended.")
        return 0
    r = _request_call(lambda: api.post(_request_path(args.id, "drop/"), reason), args.id)
    print(f"Request {r['id']}: access given back; it is now {r['state']}.")
    return 0


def request_post_review(args) -> int:
    """Ratify or reject someone's break-glass access after the fact."""
    _, api = _session()
    body = {"decision": args.decision, "reason": args.reason}
    r = _request_call(lambda: api.post(_request_path(args.id, "post-review/"), body), args.id)
    outcome = "its access has ended" if args.decision == "reject" else f"it stays {r['state']}"
    print(f"Break-glass request {r['id']} {r['post_review']}; {outcome}.")
    return 0


# --- ssh -----------------------------------------------------------------------------------------


def _find_node(api: Api, name: str) -> dict:
    items, _ = api.get_all("resources/", [("kind", "node"), ("search", name)])
    for item in items:
        if item["name"] == name:
            return item
    raise CliError(f"no SSH server named {name!r} that you may request access to (try: jit search --kind node)")


def _roles_for_login(api: Api, resource: dict, login: str) -> list[str]:
    """The roles you may request for this server that allow ``login``; an error naming what they allow."""
    wanted = set(resource.get("requestable_roles") or [])
    roles, _ = api.get_all("roles/")
    allowing = [r["name"] for r in roles if r["name"] in wanted and login in (r.get("logins") or [])]
    if not allowing:
        offered = sorted({lg for r in roles if r["name"] in wanted for lg in r.get("logins") or []})
        also = f" (they allow: {', '.join(offered)})" if offered else ""
        raise CliError(f"no role you may request allows login {login!r} on {resource['name']}{also}")
    return allowing


def _pending_request_for(api: Api, ref: str) -> dict | None:
    items, _ = api.get_all("requests/", [("scope", "mine"), ("state", "pending")])
    for item in items:
        if ref in [r.get("ref") for r in item.get("resources") or []]:
            return item
    return None


def _obtain_access(api: Api, args, *, login: str, resource: dict) -> None:
    ref = f"node/{resource['name']}"
    if args.no_request:
        raise CliError(
            f"you have no active grant for {ref}; request one with: jit request create --resource {ref}",
            exit_code=NOT_GRANTED,
        )
    roles = _roles_for_login(api, resource, login)
    pending = _pending_request_for(api, ref)
    if pending is not None:
        err(f"You have no access to {login}@{resource['name']} yet; request {pending['id']} for it is pending.")
        request = pending
    else:
        err(f"You have no access to {login}@{resource['name']}; requesting it.")
        body: dict = {"resources": [ref]}
        # Name the role only when the login decides it; otherwise the portal picks (or says to choose).
        if len(roles) == 1 and len(resource.get("requestable_roles") or []) > 1:
            body["roles"] = roles
        if args.reason is not None:
            body["reason"] = args.reason
        if args.duration:
            body["duration"] = args.duration
        request = _create_request(api, body)
        err(f"Request {request['id']} created ({request['state']}).")
    _wait(api, request)
    err("Approved.")


def ssh(args) -> int:
    login, sep, name = args.target.rpartition("@")
    if not sep or not login or not name:
        raise CliError(f"{args.target!r}: give LOGIN@RESOURCE, e.g. ubuntu@web-1", exit_code=USAGE)
    _, api = _session()
    resource = _find_node(api, name)
    check_params = {"resource": f"node/{name}", "login": login}
    check = api.get("access-check/", check_params)
    if not check["allowed"]:
        if check.get("code") != NO_GRANT:
            raise CliError(f"no access to {login}@{name}: {check.get('reason')}", exit_code=NOT_GRANTED)
        _obtain_access(api, args, login=login, resource=resource)
        check = api.get("access-check/", check_params)
        if not check["allowed"]:
            raise CliError(
                f"approved, but no access to {login}@{name} yet: {check.get('reason')}", exit_code=NOT_GRANTED
            )
    endpoint = parse_address(resource.get("address") or "", fallback_host=name)
    with ephemeral_key() as key:
        issued = api.post(f"grants/{check['grant']}/certificate/", {"public_key": key.public_key})
        key.save_certificate(issued["certificate"])
        argv = ssh_command(
            key=key,
            login=login,
            endpoint=endpoint,
            port=args.port,
            options=args.options,
            extra=args.extra,
            command=args.remote,
        )
        port = args.port or endpoint.port or 22
        return run(
            argv,
            on_start=lambda: err(
                f"Connecting to {login}@{name} ({endpoint.host}:{port}); "
                f"certificate valid until {local(issued['valid_before'])}."
            ),
        )
