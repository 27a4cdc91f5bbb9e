"""The ``jit`` command line: parsing, dispatch, and the one-line error rule.

Exit codes: 0 done; 1 refused or failed; 2 bad command line; 3 not logged in
(or the token was refused); 4 access not granted (denied, cancelled, expired,
revoked); 130 interrupted. ``jit ssh`` returns ssh's own status once it runs.
Set ``JIT_DEBUG=1`` to see a traceback instead of the one-line error.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from jitcli import __version__, commands
from jitcli.errors import FAILED, INTERRUPTED, USAGE, CliError

EPILOG = """\
exit codes: 0 done, 1 refused or failed, 2 bad command line, 3 not logged in,
4 access not granted (denied, cancelled, expired, revoked), 130 interrupted;
jit ssh exits with ssh's own status once connected.

configuration: $XDG_CONFIG_HOME/jit/config.json (default ~/.config/jit/), 0600;
JIT_SERVER and JIT_TOKEN override it."""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line naming the command."""

    def error(self, message: str):
        # argparse names an empty REMAINDER (jit ssh's optional COMMAND) among the missing arguments.
        message = message.replace("LOGIN@RESOURCE, COMMAND", "LOGIN@RESOURCE")
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="jit",
        description="Just-in-time access to servers, databases and clusters through jitportal.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"jit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str, handler, **kwargs) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=formatter, **kwargs)
        p.set_defaults(handler=handler)
        return p

    login = command("login", "log in to a portal and keep a token in the config file", commands.login)
    login.add_argument("--server", help="the portal's URL, e.g. https://jit.example.com (default: the last one)")
    login.add_argument("--user", help="your portal username (default: asked, or your local username)")
    how = login.add_mutually_exclusive_group()
    how.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input (for scripts)"
    )
    how.add_argument(
        "--token",
        action="store_true",
        help="use an API token from the portal's API tokens page, read from standard input "
        "(asked without echo at a terminal); for portals where you sign in with SSO",
    )

    command("logout", "revoke the token on the portal and forget it", commands.logout)
    command("status", "who you are, your active grants and the time they have left", commands.status)

    search = command(
        "search", "find resources you may request access to, and the command to request them", commands.search
    )
    search.add_argument("--kind", choices=["node", "db", "kube_cluster", "app", "windows_desktop"])
    search.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    search.add_argument("text", nargs="?", default="", metavar="TEXT", help="matched in name, address, description")

    request = command(
        "request", "create, list, show, cancel, review, extend, drop and post-review access requests", None
    )
    request_sub = request.add_subparsers(dest="request_command", metavar="SUBCOMMAND", parser_class=_Parser)

    def request_command(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        p = request_sub.add_parser(name, help=help_text, description=help_text, formatter_class=formatter)
        p.set_defaults(handler=handler)
        return p

    create = request_command("create", "ask for resources or a role", commands.request_create)
    create.add_argument(
        "--resource", action="append", default=[], metavar="ID|KIND/NAME", help="e.g. node/web-1; repeatable"
    )
    create.add_argument("--role", action="append", default=[], metavar="NAME", help="repeatable")
    create.add_argument("--reason", help="why (asked for when a role requires one and you are at a terminal)")
    create.add_argument("--duration", help="e.g. 30m or 2h (default: the smaller of 1h and the role's maximum)")
    create.add_argument("--start-time", metavar="ISO", help="start later, e.g. 2026-01-01T09:00:00Z")
    create.add_argument("--reviewer", action="append", default=[], metavar="NAME", help="suggest a reviewer")
    create.add_argument("--wait", action="store_true", help="wait until the request is approved or refused")

    ls = request_command("ls", "list your requests (or those awaiting your review)", commands.request_ls)
    ls.add_argument(
        "--state",
        action="append",
        default=[],
        choices=["pending", "approved", "denied", "cancelled", "expired", "revoked"],
        help="repeatable",
    )
    ls.add_argument(
        "--review",
        action="store_true",
        help="requests awaiting your review (pending, not yet reviewed by you) instead of your own",
    )

    show = request_command("show", "one request: reviews, thresholds, grants", commands.request_show)
    show.add_argument("id", metavar="ID")

    cancel = request_command("cancel", "cancel your pending request", commands.request_cancel)
    cancel.add_argument("id", metavar="ID")

    review = request_command("review", "approve or deny someone's request", commands.request_review)
    review.add_argument("id", metavar="ID")
    decision = review.add_mutually_exclusive_group(required=True)
    decision.add_argument("--approve", action="store_true")
    decision.add_argument("--deny", action="store_true")
    review.add_argument("--reason", required=True, help="why; the requester sees it")
    review.add_argument(
        "--duration", help="approvals only: grant less time than requested, e.g. 30m (never longer than requested)"
    )

    extend = request_command(
        "extend", "ask for more time on your approved access while it lasts", commands.request_extend
    )
    extend.add_argument("id", metavar="ID")
    extend.add_argument("--duration", help="how much longer, e.g. 30m (default: the smaller of 1h and the cap)")
    extend.add_argument("--reason", help="why (required when the role requires one)")

    drop = request_command("drop", "give access back now: end your request's live grants", commands.request_drop)
    drop.add_argument("id", metavar="ID")
    drop.add_argument("--grant", type=int, metavar="GRANT_ID", help="only this grant of the request")
    drop.add_argument("--reason", help="why (optional)")

    post_review = request_command(
        "post-review", "ratify or reject someone's break-glass access afterwards", commands.request_post_review
    )
    post_review.add_argument("id", metavar="ID")
    post_review.add_argument("decision", choices=["ratify", "reject"], help="reject ends the access at once")
    post_review.add_argument("--reason", default="", help="why (required to reject)")

    ssh = command(
        "ssh",
        "connect to a server with a short-lived certificate, requesting access first if you have none",
        commands.ssh,
        epilog="Options after LOGIN@RESOURCE are part of the remote command, as with ssh.",
    )
    ssh.add_argument("-p", "--port", type=int, help="port (default: from the resource's address, else 22)")
    ssh.add_argument(
        "-o", dest="options", action="append", default=[], metavar="OPTION", help="an ssh -o option; repeatable"
    )
    ssh.add_argument(
        "--ssh-option",
        dest="extra",
        action="append",
        default=[],
        metavar="ARG",
        help="any other argument for ssh, e.g. --ssh-option=-v; repeatable",
    )
    ssh.add_argument("--reason", help="the reason, if access has to be requested")
    ssh.add_argument("--duration", help="how long to ask for, if access has to be requested")
    ssh.add_argument("--no-request", action="store_true", help="fail instead of requesting access")
    ssh.add_argument("target", metavar="LOGIN@RESOURCE", help="e.g. ubuntu@web-1 (a node, by name)")
    ssh.add_argument("remote", nargs=argparse.REMAINDER, metavar="COMMAND", help="run this instead of a shell")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        # "jit" or "jit request" alone: show what there is.
        sub = parser if args.command is None else parser._subparsers._group_actions[0].choices[args.command]
        sub.print_help(sys.stderr)
        return USAGE
    try:
        return handler(args) or 0
    except CliError as exc:
        if os.environ.get("JIT_DEBUG"):
            traceback.print_exc()
        print(f"jit: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("jit: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # the promise is one line, never a traceback
        if os.environ.get("JIT_DEBUG"):
            traceback.print_exc()
        print(f"jit: unexpected error: {type(exc).__name__}: {exc} (JIT_DEBUG=1 shows details)", file=sys.stderr)
        return FAILED
