"""``manage.py apply -f policy.yaml [--prune] [--dry-run]``: policy as code."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.policy import PolicyResult, policy_apply, policy_load
from audit.services import audit_record
from jitportal.errors import DomainError

# AuditEvent.target_id is 64 characters; a long path keeps its informative end.
_TARGET_ID_LENGTH = 64


class Command(BaseCommand):
    help = (
        "Make groups, users, roles and resources match a policy file (see DESIGN.md, 'Policy as code'). "
        "Objects the file names are made to match it exactly; others are left alone unless --prune. "
        "Prints what changed; all or nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-f", "--file", required=True, help="the policy YAML file, or - to read standard input")
        parser.add_argument(
            "--prune",
            action="store_true",
            help="in each section the file has, delete the groups, roles and resources it does not name and "
            "deactivate the users it does not name (never superusers); refuses to delete what history refers to",
        )
        parser.add_argument("--dry-run", action="store_true", help="check and report the changes, write nothing")

    def handle(self, *args, file: str, prune: bool, dry_run: bool, **options) -> None:
        try:
            # The text is not kept: for a large inventory it would sit in memory through the whole apply.
            data = policy_load(self._read(file))
            # One transaction for the changes and their audit event: both or neither.
            with transaction.atomic():
                result = policy_apply(data=data, prune=prune, dry_run=dry_run)
                if result.changed and not dry_run:
                    self._audit(file, result)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        for line in result.lines():
            self.stdout.write(line)
        summary = result.summary()
        if dry_run:
            summary += " (dry run: nothing was written)"
        self.stdout.write(summary)

    def _read(self, file: str) -> str:
        try:
            if file == "-":
                return sys.stdin.read()
            with open(file, encoding="utf-8") as handle:
                return handle.read()
        except UnicodeDecodeError:
            raise CommandError(f"{file}: is not UTF-8 text") from None
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror or exc}") from None

    def _audit(self, file: str, result: PolicyResult) -> None:
        target_id = "<stdin>" if file == "-" else file
        if len(target_id) > _TARGET_ID_LENGTH:
            target_id = "…" + target_id[-(_TARGET_ID_LENGTH - 1) :]
        audit_record(
            action="policy.applied",
            actor=None,
            target_type="policy",
            target_id=target_id,
            data={"created": result.created, "updated": result.updated, "deleted": result.deleted},
        )
