"""``manage.py email_channel NAME [--to ADDRESS ...] [--event EVENT ...]``: an email notification channel.

For scripts and ``make demo``: with Django's console mail backend (the
development default in ``.env.example``) the worker prints each message, so
"reviewers have been asked" shows in the terminal of ``make run``. Other
channel kinds carry webhook secrets and are set up in the admin.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jitportal.errors import DomainError
from requests_app.models import NotificationChannel
from requests_app.notifications.outbox import email_channel_ensure

EVENTS = NotificationChannel.Event.values


class Command(BaseCommand):
    help = (
        "Make an enabled email notification channel named NAME exist, with exactly the given recipients "
        "and events (idempotent). Without --to, new requests go to their eligible reviewers and the "
        "requester's events to the requester."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--to", action="append", default=[], metavar="ADDRESS", help="a fixed recipient for new requests"
        )
        parser.add_argument(
            "--event",
            action="append",
            dest="events",
            choices=EVENTS,
            metavar="EVENT",
            help=f"an event to send (repeatable; default: all of {', '.join(EVENTS)})",
        )

    def handle(self, *args, name: str, to: list[str], events: list[str] | None, **options) -> None:
        try:
            channel, outcome = email_channel_ensure(name=name, to=to, events=events or EVENTS)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"email channel {channel.name}: {outcome}")
