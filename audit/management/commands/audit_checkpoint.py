"""Seal the audit log, append a signed checkpoint line and verify the log against the checkpoint file.

What beat's ``checkpoint_audit`` does, by hand: prints the line (or that the
head has not moved since the last one) and exits 1 when verification fails.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.services import audit_checkpoint


class Command(BaseCommand):
    help = "Seal the audit log and append a signed checkpoint to JITPORTAL_AUDIT_CHECKPOINT_FILE."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--file", help="the checkpoint file (default: JITPORTAL_AUDIT_CHECKPOINT_FILE)")

    def handle(self, *args, file: str | None = None, **options) -> None:
        checkpoint = audit_checkpoint(path=file)
        state = "written" if checkpoint.written else "unchanged since the last line"
        self.stdout.write(
            f"checkpoint seq {checkpoint.seq} mac {checkpoint.mac[:16] or '-'} key {checkpoint.key} ({state})"
        )
        if checkpoint.webhook_error:
            self.stderr.write(f"webhook failed: {checkpoint.webhook_error}")
        if not checkpoint.ok:
            raise CommandError(f"audit log broken: {checkpoint.problem}")
