"""``manage.py ssh_ca init|rotate|list``: the SSH user certificate authority.

``init`` makes the first CA (the first certificate issued also makes one; the
public key endpoint never does); ``rotate`` adds a new signing CA and keeps
the older ones trusted for an overlap, so certificates already out keep
working; ``list`` shows what hosts trust. The private key is never printed.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count
from django.utils import timezone

from accounts.models import MAX_ROLE_DURATION
from jitportal.durations import format_duration, parse_duration
from jitportal.errors import DomainError
from requests_app.credentials.ca import ssh_ca_init, ssh_ca_rotate
from requests_app.models import SSHCertificateAuthority


def _overlap(value: str) -> timedelta:
    if value.strip() in ("0", "0s", "now"):
        return timedelta(0)
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise CommandError(f"--trust-old-for: {exc}") from None


class Command(BaseCommand):
    help = "Manage the SSH user certificate authority: init, rotate (with an overlap), list."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{init,rotate,list}")
        actions.add_parser("init", help="create the CA unless one already signs (idempotent)")
        rotate = actions.add_parser(
            "rotate", help="add a new signing CA; older ones stop signing and stay trusted for a while"
        )
        rotate.add_argument(
            "--trust-old-for",
            default=format_duration(MAX_ROLE_DURATION),
            metavar="DURATION",
            help=(
                "how long hosts keep trusting the older CAs, e.g. 7d or 12h (default: "
                f"{format_duration(MAX_ROLE_DURATION)}, the longest a certificate can live); "
                "0 stops trusting them at once, for a leaked key"
            ),
        )
        rotate.add_argument("--name", help="name of the new CA (default: user-ca-N)")
        actions.add_parser("list", help="every CA: fingerprint, status, certificates signed")

    def handle(self, *args, action: str, **options) -> None:
        try:
            getattr(self, f"_{action}")(**options)
        except DomainError as exc:
            raise CommandError(exc.message) from None

    def _init(self, **options) -> None:
        ca, created = ssh_ca_init()
        verb = "created" if created else "already exists:"
        self.stdout.write(f"{verb} {ca.name} {ca.fingerprint}")
        self.stdout.write(ca.public_key)

    def _rotate(self, *, trust_old_for: str, name: str | None, **options) -> None:
        overlap = _overlap(trust_old_for)
        rotation = ssh_ca_rotate(trust_old_for=overlap, name=name)
        self.stdout.write(f"created {rotation.new.name} {rotation.new.fingerprint} (signs from now on)")
        for ca in rotation.retired:
            until = (
                "no longer trusted"
                if overlap == timedelta(0)
                else f"trusted until {ca.trusted_until:%Y-%m-%d %H:%M %Z}"
            )
            self.stdout.write(f"retired {ca.name} {ca.fingerprint} ({until})")
        if rotation.cut_short:
            self.stderr.write(
                f"warning: {rotation.cut_short} certificate(s) signed by the older CA(s) are valid beyond their "
                "trust and will stop working early"
            )
        self.stdout.write("Hosts pick up the new key from GET /api/v1/ca/ssh/ (TrustedUserCAKeys).")

    def _list(self, **options) -> None:
        now = timezone.now()
        cas = SSHCertificateAuthority.objects.defer("private_key").annotate(issued=Count("certificates"))
        if not cas:
            self.stdout.write("no SSH CA yet (manage.py ssh_ca init, or the first certificate, makes one)")
            return
        for ca in cas.order_by("-created_at", "-id"):
            if ca.trusted_until is not None and ca.trusted_until <= now:
                status = "untrusted"
            elif ca.retired_at is None or ca.retired_at > now:
                status = "signing"
            else:
                status = f"trusted until {ca.trusted_until:%Y-%m-%d %H:%M %Z}" if ca.trusted_until else "trusted"
            self.stdout.write(
                f"{ca.name}  {ca.fingerprint}  {status}  created {ca.created_at:%Y-%m-%d %H:%M %Z}  "
                f"{ca.issued} certificate(s)"
            )
