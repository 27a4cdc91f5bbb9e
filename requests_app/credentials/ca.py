"""The user certificate authority: creating, choosing the signing key, trusting and rotating."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q, Subquery, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from audit.services import audit_record
from jitportal.errors import DomainError
from requests_app.credentials.keys import ca_keys_generate
from requests_app.models import IssuedCertificate, SSHCertificateAuthority

_CA_NAME = re.compile(r"user-ca-(\d+)")


# --- the certificate authority ------------------------------------------------------------


def _signing_q(at: datetime) -> Q:
    return Q(retired_at__isnull=True) | Q(retired_at__gt=at)


def _trusted_q(at: datetime) -> Q:
    return Q(trusted_until__isnull=True) | Q(trusted_until__gt=at)


def _ca_create(*, at: datetime, name: str | None = None) -> SSHCertificateAuthority:
    if name is None:
        names = SSHCertificateAuthority.objects.values_list("name", flat=True)
        numbers = [int(m.group(1)) for n in names if (m := _CA_NAME.fullmatch(n))]
        name = f"user-ca-{max(numbers, default=0) + 1}"
    keys = ca_keys_generate(name)
    # A savepoint: losing a race for the name must not spoil the caller's transaction.
    with transaction.atomic():
        return SSHCertificateAuthority.objects.create(
            name=name,
            public_key=keys.public_line,
            private_key=keys.private_pem,
            fingerprint=keys.fingerprint,
            created_at=at,
        )


def _ca_signing_at(at: datetime) -> SSHCertificateAuthority | None:
    """The CA that signs at ``at``: the newest one not retired by then, if any.

    Its private key is read as stored (encrypted, ``private_key_token``), not
    decrypted: ``certificate_sign`` decrypts it once per process and stored
    value, so a rotated or re-encrypted key is never served from before.
    """
    return (
        SSHCertificateAuthority.objects.filter(_signing_q(at))
        .defer("private_key")
        .annotate(private_key_token=Cast("private_key", TextField()))
        .order_by("-created_at", "-id")
        .first()
    )


def ssh_ca_signing_columns(at: datetime) -> dict[str, Subquery]:
    """Annotations naming the CA that signs at ``at``, so a caller reads it with its own row.

    The same choice as ``ssh_ca_signing`` (newest not retired), read in the
    caller's statement: a rotation committed before it is seen, with no round
    trip of its own. ``ssh_ca_signing_read`` turns them back into the CA.
    """
    newest = SSHCertificateAuthority.objects.filter(_signing_q(at)).order_by("-created_at", "-id")
    return {
        "signing_ca_id": Subquery(newest.values("pk")[:1]),
        "signing_ca_fingerprint": Subquery(newest.values("fingerprint")[:1]),
        "signing_ca_key": Subquery(
            newest.annotate(token=Cast("private_key", TextField())).values("token")[:1], output_field=TextField()
        ),
    }


def ssh_ca_signing_read(row, *, at: datetime) -> SSHCertificateAuthority:
    """The signing CA from a row annotated with ``ssh_ca_signing_columns``; made on first use, as ever."""
    if row.signing_ca_id is None:
        return ssh_ca_signing(at=at)
    ca = SSHCertificateAuthority(pk=row.signing_ca_id, fingerprint=row.signing_ca_fingerprint)
    # Only what signing needs: the stored (encrypted) key, which ``certificate_sign`` decrypts once per process.
    ca.private_key_token = row.signing_ca_key
    return ca


def ssh_ca_signing(*, at: datetime | None = None) -> SSHCertificateAuthority:
    """The CA that signs now: the newest one not retired, created on first use (a certificate or ``ssh_ca init``)."""
    at = at or timezone.now()
    ca = _ca_signing_at(at)
    if ca is not None:
        return ca
    try:
        ca = _ca_create(at=at)
    except IntegrityError:
        # Another process created the first CA at the same moment: use theirs.
        ca = _ca_signing_at(at)
        if ca is None:
            raise
        return ca
    audit_record(action="ssh_ca.created", target=ca, data={"name": ca.name, "fingerprint": ca.fingerprint})
    return ca


def ssh_ca_init(*, at: datetime | None = None) -> tuple[SSHCertificateAuthority, bool]:
    """Make sure a signing CA exists; returns it and whether it was created now."""
    at = at or timezone.now()
    with transaction.atomic():
        existing = _ca_signing_at(at)
        if existing is not None:
            return existing, False
        return ssh_ca_signing(at=at), True


def ssh_cas_trusted(*, at: datetime | None = None) -> list[SSHCertificateAuthority]:
    """Every CA hosts should trust now, newest first; empty before ``ssh_ca init`` or the first certificate.

    A read only: the public endpoint that serves this never creates a CA, so
    an anonymous caller cannot make the portal generate and store a key.
    """
    at = at or timezone.now()
    return list(SSHCertificateAuthority.objects.filter(_trusted_q(at)).order_by("-created_at", "-id"))


@dataclass(frozen=True)
class Rotation:
    new: SSHCertificateAuthority
    retired: list[SSHCertificateAuthority]
    # Certificates that will outlive their CA's trust and so stop working early.
    cut_short: int


def ssh_ca_rotate(
    *, trust_old_for: timedelta, name: str | None = None, actor=None, at: datetime | None = None
) -> Rotation:
    """Add a new signing CA; older CAs stop signing now and stay trusted for ``trust_old_for``.

    A zero ``trust_old_for`` stops trusting every older CA at once (the key
    leaked). Rotation only ever shortens an older CA's trust, never extends it.
    """
    at = at or timezone.now()
    if trust_old_for < timedelta(0):
        raise DomainError("must not be negative", field="trust_old_for")
    if name is not None and (not name.strip() or len(name) > 100):
        raise DomainError("a CA name is 1 to 100 characters", field="name")
    until = at + trust_old_for
    with transaction.atomic():
        older = list(SSHCertificateAuthority.objects.select_for_update().filter(_trusted_q(at)).order_by("created_at"))
        if name is not None and SSHCertificateAuthority.objects.filter(name=name).exists():
            raise DomainError(f"a CA named {name!r} already exists", field="name")
        new = _ca_create(at=at, name=name)
        retired = []
        for ca in older:
            changed = []
            if ca.retired_at is None or ca.retired_at > at:
                ca.retired_at = at
                changed.append("retired_at")
            if ca.trusted_until is None or ca.trusted_until > until:
                ca.trusted_until = until
                changed.append("trusted_until")
            if changed:
                ca.save(update_fields=changed)
            retired.append(ca)
        cut_short = IssuedCertificate.objects.filter(
            ca__in=[ca.pk for ca in older], valid_before__gt=until, grant__revoked_at__isnull=True
        ).count()
        audit_record(
            action="ssh_ca.rotated",
            actor=actor,
            target=new,
            data={
                "new": {"name": new.name, "fingerprint": new.fingerprint},
                "retired": [{"name": ca.name, "fingerprint": ca.fingerprint} for ca in retired],
                "trusted_until": until.isoformat(),
                "certificates_cut_short": cut_short,
            },
        )
    return Rotation(new=new, retired=retired, cut_short=cut_short)
