"""SSH credentials: the user certificate authority and the certificates it signs.

Every use of ``cryptography`` for SSH lives in this module (key parsing,
fingerprints, CA keys, certificate signing), next to the services and
selectors that use it, so a reviewer reads one file to see what the portal
signs and why.

How a certificate is scoped (DESIGN.md, "Credentials"):

- principals are ``login@resource-name`` for each login of the grant's role and
  each SSH server the grant covers, so a host whose ``AuthorizedPrincipalsFile``
  lists only the principals naming itself refuses certificates for other hosts;
- ``valid_before`` is never later than the grant's ``expires_at``;
- hosts refuse the subject keys of certificates whose access ended early
  (``ssh_revoked_public_keys``, for sshd's ``RevokedKeys``).
"""

from __future__ import annotations

import base64
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import ssh
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import audit_record
from inventory.models import Resource
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from requests_app.models import Grant, IssuedCertificate, SSHCertificateAuthority, grant_refusal

# OpenSSH refuses certificates with more principals than this (and so does cryptography).
MAX_PRINCIPALS = 256
# Certificates start a minute in the past so a host whose clock is slightly behind accepts them.
BACKDATE = timedelta(seconds=60)
MIN_RSA_BITS = 3072
# OpenSSH's own ceiling for RSA moduli.
MAX_RSA_BITS = 16384
MAX_PUBLIC_KEY_LENGTH = 16384
# Extensions a role may turn on; X11 forwarding and user rc files are never granted.
ROLE_EXTENSIONS = {
    "ssh_permit_pty": "permit-pty",
    "ssh_permit_port_forwarding": "permit-port-forwarding",
    "ssh_permit_agent_forwarding": "permit-agent-forwarding",
}
# A principal is one token in an AuthorizedPrincipalsFile line: no blanks, no
# commas (sshd reads those as lists), no quotes, and not a comment.
_PRINCIPAL = re.compile(r"[^\s,\"'#][^\s,\"']*")
_CA_NAME = re.compile(r"user-ca-(\d+)")
# Key types we do not sign (ssh-dss, FIDO sk-… keys), told apart from text that is no key at all.
_KEY_TYPE = re.compile(r"(ssh|ecdsa|sk)-[A-Za-z0-9@._-]{1,60}")
_NOT_A_KEY = "is not an OpenSSH public key (expected a line like 'ssh-ed25519 AAAA… comment')"


# --- cryptography: keys, fingerprints, signatures --------------------------------------


def _fingerprint(key: ssh.SSHPublicKeyTypes) -> str:
    """``SHA256:…`` as ``ssh-keygen -l`` prints it."""
    digest = ssh.ssh_key_fingerprint(key, hashes.SHA256())
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _openssh_line(key: ssh.SSHPublicKeyTypes) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@dataclass(frozen=True)
class UserPublicKey:
    """A user's public key, checked: its one-line OpenSSH form (no comment) and fingerprint."""

    key: ssh.SSHCertPublicKeyTypes
    line: str
    fingerprint: str


def public_key_parse(text: object) -> UserPublicKey:
    """Parse an OpenSSH public key a certificate may be signed for.

    Accepts ed25519, ecdsa (P-256/384/521) and rsa of at least 3072 bits;
    anything else is a DomainError on ``public_key`` saying what was wrong.
    """

    def refuse(message: str) -> DomainError:
        return DomainError(message, field="public_key")

    if not isinstance(text, str) or not text.strip():
        raise refuse("send an OpenSSH public key, e.g. the contents of ~/.ssh/id_ed25519.pub")
    text = text.strip()
    if len(text) > MAX_PUBLIC_KEY_LENGTH:
        raise refuse(f"is longer than {MAX_PUBLIC_KEY_LENGTH} characters; send one public key")
    if "PRIVATE KEY" in text:
        # Said loudly: the key was pasted somewhere it should not have been.
        raise refuse("this is a private key; send the public key (the .pub file) and keep the private key secret")
    if "\n" in text:
        raise refuse("send exactly one public key, on one line")
    try:
        identity = ssh.load_ssh_public_identity(text.encode())
    except UnsupportedAlgorithm:
        kind = text.split()[0]
        if _KEY_TYPE.fullmatch(kind):
            raise refuse(
                f"{kind} keys are not accepted; use ed25519, ecdsa or rsa (at least {MIN_RSA_BITS} bits)"
            ) from None
        raise refuse(_NOT_A_KEY) from None
    except ValueError:
        raise refuse(_NOT_A_KEY) from None
    if isinstance(identity, ssh.SSHCertificate):
        raise refuse("this is a certificate; send the public key it was made for")
    key = identity
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise refuse(f"rsa keys must have at least {MIN_RSA_BITS} bits; this one has {key.key_size}")
        if key.key_size > MAX_RSA_BITS:
            raise refuse(f"rsa keys may have at most {MAX_RSA_BITS} bits; this one has {key.key_size}")
    elif not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise refuse(f"{type(key).__name__} keys are not accepted; use ed25519, ecdsa or rsa")
    return UserPublicKey(key=key, line=_openssh_line(key), fingerprint=_fingerprint(key))


@dataclass(frozen=True)
class _CAKeys:
    private_pem: str
    public_line: str
    fingerprint: str


def _ca_keys_generate(name: str) -> _CAKeys:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = private.public_key()
    # The comment names the portal and the CA, so a host's TrustedUserCAKeys file says whose keys these are.
    return _CAKeys(pem, f"{_openssh_line(public)} jitportal-{name}", _fingerprint(public))


def _sign(
    *,
    ca: SSHCertificateAuthority,
    subject: UserPublicKey,
    principals: list[str],
    key_id: str,
    serial: int,
    valid_after: int,
    valid_before: int,
    extensions: list[str],
) -> str:
    private = serialization.load_ssh_private_key(ca.private_key.encode(), password=None)
    builder = (
        ssh.SSHCertificateBuilder()
        .public_key(subject.key)
        .serial(serial)
        .type(ssh.SSHCertificateType.USER)
        .key_id(key_id.encode())
        .valid_principals([p.encode() for p in principals])
        .valid_after(valid_after)
        .valid_before(valid_before)
    )
    for name in extensions:
        builder = builder.add_extension(name.encode(), b"")
    return builder.sign(private).public_bytes().decode()


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
    keys = _ca_keys_generate(name)
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
    """The CA that signs at ``at``: the newest one not retired by then, if any."""
    return SSHCertificateAuthority.objects.filter(_signing_q(at)).order_by("-created_at", "-id").first()


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


# --- principals ---------------------------------------------------------------------------


def _principal(login: str, resource: Resource) -> str:
    return f"{login}@{resource.name}"


def _is_valid_principal(principal: str) -> bool:
    return bool(_PRINCIPAL.fullmatch(principal)) and principal.isprintable()


def grant_ssh_principals(grant: Grant) -> list[str]:
    """The principals a certificate for ``grant`` carries: ``login@name`` per login and SSH server.

    Raises DomainError when there is nothing sensible to sign (no logins, no
    SSH server) or more than a certificate may carry.
    """
    role = grant.role
    logins = sorted(set(role.logins or []))
    if not logins:
        raise DomainError(f"role {role.name} allows no logins, so there is nothing to put in a certificate")
    if grant.resource_id is not None:
        if grant.resource.kind != Resource.Kind.NODE:
            raise DomainError(f"{grant.resource.ref} is not an SSH server; certificates are only for nodes")
        resources = [grant.resource]
    else:
        nodes = Resource.objects.filter(role.resource_q(), kind=Resource.Kind.NODE)
        count = nodes.count()
        if count == 0:
            raise DomainError(f"role {role.name} matches no SSH server (node)")
        total = count * len(logins)
        if total > MAX_PRINCIPALS:
            raise DomainError(
                f"this grant covers {count} SSH servers × {len(logins)} logins = {total} principals, more than "
                f"the {MAX_PRINCIPALS} a certificate may carry; request the servers you need by name"
            )
        resources = list(nodes.order_by("name").only("id", "kind", "name"))
    principals = [_principal(login, resource) for resource in resources for login in logins]
    for principal in principals:
        if not _is_valid_principal(principal):
            raise DomainError(f"{principal!r} cannot be a certificate principal (blank, comma or quote in a name)")
    return principals


def resource_ssh_principals(*, resource: Resource, login: str | None = None, at: datetime | None = None) -> list[str]:
    """Lines for the host's AuthorizedPrincipalsFile: ``login@name`` for the grants honoured on it now.

    A login is listed while some grant the access check honours covers this
    host with a role that allows it (``GrantQuerySet.honoured``), so losing
    the grant's group, the account or the host's labels takes the principal
    off at once; the revoked keys list catches certificates of a login that
    someone else still holds.
    """
    at = at or timezone.now()
    grants = (
        Grant.objects.honoured(at=at)
        .filter(Q(resource=resource) | Q(resource__isnull=True))
        .select_related("role")
        .only("id", "resource_id", "role__id", "role__resource_kinds", "role__resource_labels", "role__logins")
    )
    logins: set[str] = set()
    for grant in grants:
        # A grant on this resource is honoured only while its role matches it; a role-based one
        # covers the resource when its role does (the access check's test).
        if grant.role.matches(resource):
            logins.update(grant.role.logins or [])
    if login is not None:
        logins &= {login}
    principals = (_principal(name, resource) for name in sorted(logins))
    return [p for p in principals if _is_valid_principal(p)]


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
    refusal = grant_refusal(grant, at=at)
    if refusal is None:
        return
    # A grant outside its window is a state to wait out or renew; one the owner lost is a refusal.
    if grant.state_at(at) != Grant.State.ACTIVE:
        raise StateConflict(refusal, code="grant_not_active")
    raise PermissionRefused(refusal, code="not_honoured")


def certificate_issue(*, grant: Grant, user, public_key: str, at: datetime | None = None) -> IssuedCertificate:
    """Sign an OpenSSH user certificate for ``public_key``, scoped to ``grant`` and ending with it.

    Only for the grant's owner, only while the grant is active and the owner
    still eligible (the access check's rules). The grant row is locked, so a
    revocation either comes first (no certificate) or after (the certificate's
    key is then listed by ``ssh_revoked_public_keys``).
    """
    at = at or timezone.now()
    subject = public_key_parse(public_key)
    with transaction.atomic():
        locked = Grant.objects.select_for_update().get(pk=grant.pk)
        _refuse_unless_usable(locked, user=user, at=at)
        role = locked.role
        principals = grant_ssh_principals(locked)
        ca = ssh_ca_signing(at=at)
        valid_after = _epoch(at - BACKDATE)
        # Rounded down: never a second past the grant.
        valid_before = _epoch(locked.expires_at)
        if valid_before <= _epoch(at, up=True):
            raise StateConflict("the grant ends within the second; request access again")
        extensions = sorted(ext for attr, ext in ROLE_EXTENSIONS.items() if getattr(role, attr))
        key_id = f"{user.username}@jitportal request={locked.request_id} grant={locked.pk}"
        for _attempt in range(5):
            serial = _serial_new()
            certificate = _sign(
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
                with transaction.atomic():
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
                break
            except IntegrityError:
                # A serial already used (one chance in 2**63 per certificate): draw again.
                continue
        else:
            raise RuntimeError("could not draw an unused certificate serial")
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


def ssh_revoked_public_keys(*, at: datetime | None = None) -> list[str]:
    """Subject keys of still-valid certificates whose grant the access check no longer honours.

    ``GrantQuerySet.honoured`` decides: revoked, owner deactivated or out of
    every group that may request the role, or the resource relabelled out of
    the role. A certificate drops off the list once it would have expired
    anyway, so the list stays short. Two queries.
    """
    at = at or timezone.now()
    keys = (
        IssuedCertificate.objects.filter(valid_before__gt=at)
        .exclude(grant__in=Grant.objects.honoured(at=at).values("pk"))
        .order_by("public_key")
        .values_list("public_key", flat=True)
        .distinct()
    )
    return list(keys)
