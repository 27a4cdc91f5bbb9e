"""Verify the audit log and report the first bad event.

Exit status 0 when the log is intact, 1 when it is not, so it can run in a
cron job or a monitoring check. With ``--checkpoints FILE`` every signed
checkpoint line is checked too, which catches deletions of the newest events,
truncation and a wiped table.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.services import audit_verify


class Command(BaseCommand):
    help = "Verify the audit log's MAC chain (and signed checkpoints); exits 1 at the first bad event."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--checkpoints", metavar="FILE", help="the signed checkpoint file to check the log against")

    def handle(self, *args, checkpoints: str | None = None, **options) -> None:
        report = audit_verify(checkpoints=checkpoints)
        if not report.ok:
            where = []
            if report.first_bad_seq is not None:
                where.append(f"seq {report.first_bad_seq}")
            if report.first_bad_id is not None:
                where.append(f"id {report.first_bad_id}")
            if report.bad_line is not None:
                where.append(f"checkpoint line {report.bad_line}")
            raise CommandError(
                f"audit log broken at {', '.join(where) or 'the log'} after {report.checked} intact events: "
                f"{report.problem}"
            )
        lines = f", {report.checkpoints_checked} checkpoints" if checkpoints else ""
        unsealed = ""
        if report.unsealed:
            unsealed = f"; {report.unsealed} unsealed since {report.oldest_unsealed_at.isoformat()}"  # type: ignore[union-attr]
        self.stdout.write(f"audit log intact: {report.checked} events{lines}{unsealed}")
