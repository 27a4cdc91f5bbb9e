"""Walk the audit hash chain and report the first break.

Exit status 0 when the chain is intact, 1 when it is not, so it can run in a
cron job or a monitoring check.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.services import audit_verify


class Command(BaseCommand):
    help = "Verify the hash chain of the audit log; exits 1 at the first break."

    def handle(self, *args, **options) -> None:
        report = audit_verify()
        if not report.ok:
            where = f"event {report.first_bad_id}" if report.first_bad_id is not None else "the chain head"
            raise CommandError(f"audit chain broken at {where} after {report.checked} intact events: {report.problem}")
        self.stdout.write(f"audit chain intact: {report.checked} events")
