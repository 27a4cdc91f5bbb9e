"""User certificates: signed for an honoured grant, never valid past its expiry."""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from accounts.models import Role
from audit.services import audit_record
from jitportal.errors import PermissionRefused, StateConflict
from requests_app.credentials.ca import ssh_ca_signing_columns, ssh_ca_signing_read
from requests_app.credentials.hosts import grant_ssh_principals
from requests_app.credentials.keys import UserPublicKey, certificate_sign, public_key_parse
from requests_app.models import Grant, IssuedCertificate, grant_refusal

# Certificates start a minute in the past so a host whose clock is slightly behind accepts them.
BACKDATE = timedelta(seconds=60)


# Extensions a role may turn on; X11 forwarding and user rc files are never granted.
ROLE_EXTENSIONS = {
    "ssh_permit_pty": "permit-pty",
    "ssh_permit_port_forwarding": "permit-port-forwarding",
    "ssh_permit_agent_forwarding": "permit-agent-forwarding",
}
# A principal is one token in an AuthorizedPrincipalsFile line: no blanks, no


# --- certificates -----------------------------------------------------------------------------


def _serial_new() -> int:
    # 63 bits: unique at random, and still a positive signed 64-bit integer in every database.
    return secrets.randbits(63) or 1


def _epoch(moment: datetime, *, up: bool = False) -> int:
    value = moment.timestamp()
    return math.ceil(value) if up else math.floor(value)


def _refuse_unless_usable(grant: Grant, *, user, at: datetime) -> None:
    if grant.user_id != user.pk:
        raise PermissionRefused("only the grant's owner can get a certificate for it")
    # Whether the owner may still request the role was read with the grant (``owner_eligible``).
    refusal = grant_refusal(grant, at=at, eligible_role_ids={grant.role_id} if grant.owner_eligible else set())
    if refusal is None:
        return
    # A grant outside its window is a state to wait out or renew; one the owner lost is a refusal.
    if grant.state_at(at) != Grant.State.ACTIVE:
        raise StateConflict(refusal, code="grant_not_active")
    raise PermissionRefused(refusal, code="not_honoured")


class _SerialTaken(Exception):
    """The drawn serial was already used; the whole issue is tried again with a new one."""


def certificate_issue(*, grant: Grant, user, public_key: str, at: datetime | None = None) -> IssuedCertificate:
    """Sign an OpenSSH user certificate for ``public_key``, scoped to ``grant`` and ending with it.

    Only for the grant's owner, only while the grant is active and the owner
    still eligible (the access check's rules). The grant row is locked, so a
    revocation either comes first (no certificate) or after (the certificate's
    key is then listed by ``ssh_revoked_public_keys``).
    """
    at = at or timezone.now()
    subject = public_key_parse(public_key)
    # 63 random bits make a repeated serial all but impossible, so no savepoint guards each insert; the
    # unique constraint is the backstop, and a collision rolls the whole issue back to be drawn again.
    for _attempt in range(3):
        try:
            return _certificate_issue_once(grant=grant, user=user, subject=subject, at=at)
        except _SerialTaken:
            continue
    raise RuntimeError("could not draw an unused certificate serial")


def _certificate_issue_once(*, grant: Grant, user, subject: UserPublicKey, at: datetime) -> IssuedCertificate:
    with transaction.atomic():
        # The role, owner, resource, the owner's eligibility and the signing CA in one read; only the
        # grant row is locked.
        locked = (
            Grant.objects.select_for_update(of=("self",))
            .select_related("role", "user", "resource")
            .annotate(
                owner_eligible=Exists(Role.objects.requestable_by(user).filter(pk=OuterRef("role_id"))),
                **ssh_ca_signing_columns(at),
            )
            .get(pk=grant.pk)
        )
        _refuse_unless_usable(locked, user=user, at=at)
        role = locked.role
        principals = grant_ssh_principals(locked)
        ca = ssh_ca_signing_read(locked, at=at)
        valid_after = _epoch(at - BACKDATE)
        # Rounded down: never a second past the grant.
        valid_before = _epoch(locked.expires_at)
        if valid_before <= _epoch(at, up=True):
            raise StateConflict("the grant ends within the second; request access again")
        extensions = sorted(ext for attr, ext in ROLE_EXTENSIONS.items() if getattr(role, attr))
        key_id = f"{user.username}@jitportal request={locked.request_id} grant={locked.pk}"
        serial = _serial_new()
        certificate = certificate_sign(
            ca=ca,
            subject=subject,
            principals=principals,
            key_id=key_id,
            serial=serial,
            valid_after=valid_after,
            valid_before=valid_before,
            extensions=extensions,
        )
        try:
            issued = IssuedCertificate.objects.create(
                grant=locked,
                ca=ca,
                serial=serial,
                key_id=key_id,
                principals=principals,
                public_key=subject.line,
                public_key_fingerprint=subject.fingerprint,
                certificate=certificate,
                valid_after=datetime.fromtimestamp(valid_after, tz=UTC),
                valid_before=datetime.fromtimestamp(valid_before, tz=UTC),
                created_at=at,
            )
        except IntegrityError as error:
            # The window is checked above and the references are locked or read, so only the serial can clash.
            raise _SerialTaken from error
        audit_record(
            action="certificate.issued",
            actor=user,
            target=locked,
            data={
                "serial": serial,
                "principals": principals,
                "fingerprint": subject.fingerprint,
                "ca": ca.fingerprint,
                "key_id": key_id,
                "request": str(locked.request_id),
                "valid_after": issued.valid_after.isoformat(),
                "valid_before": issued.valid_before.isoformat(),
                "extensions": extensions,
            },
        )
    return issued
