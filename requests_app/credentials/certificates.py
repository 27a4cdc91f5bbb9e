"""User certificates: signed for an honoured grant, never valid past its expiry."""

from __future__ import annotations

import functools
import json
import math
import secrets
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from accounts.models import Role, User
from audit.models import AuditEvent
from audit.services import AUDIT_INSERT_COLUMNS, audit_record, audit_row
from inventory.models import Resource
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from jitportal.statements import Statement, execute_prepared
from requests_app.credentials.ca import ssh_ca_signing_columns, ssh_ca_signing_read
from requests_app.credentials.hosts import grant_ssh_principals
from requests_app.credentials.keys import certificate_sign, public_key_parse
from requests_app.models import Grant, IssuedCertificate, SSHCertificateAuthority, grant_refusal

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


class _SerialTaken(Exception):
    """The drawn serial was already used; the whole issue is tried again with a new one."""


class _GrantChanged(Exception):
    """Between the read and the write the grant, its owner or the signing CA changed: decide again."""


# The code of the refusal when the caller does not own the grant or there is no such grant; the API
# then answers from the caller's view of grants (404 unless visible, else 403), as for any other row.
NOT_OWNER = "not_grant_owner"
_NOT_OWNER_MESSAGE = "only the grant's owner can get a certificate for it"

_GRANT_FIELDS = ("id", "request_id", "user_id", "role_id", "resource_id", "starts_at", "expires_at", "revoked_at")
_ROLE_FIELDS = ("name", "logins", "resource_kinds", "resource_labels", *ROLE_EXTENSIONS)
_RESOURCE_FIELDS = ("kind", "name", "labels")
_OWNER_FIELDS = ("username", "is_active")
_ROLE_JSON = ("logins", "resource_kinds", "resource_labels")


def _issuing_read(grant_id: int, at: datetime) -> QuerySet:
    """The grant and all that deciding and signing need: role, resource, owner, eligibility, signing CA."""
    may_request = Role.requestable_by.through.objects.filter(
        role_id=OuterRef("role_id"), group__user=OuterRef("user_id")
    )
    return (
        Grant.objects.filter(pk=grant_id)
        .annotate(owner_eligible=Exists(may_request), **ssh_ca_signing_columns(at))
        .values(
            *_GRANT_FIELDS,
            *(f"role__{name}" for name in _ROLE_FIELDS),
            *(f"resource__{name}" for name in _RESOURCE_FIELDS),
            *(f"user__{name}" for name in _OWNER_FIELDS),
            "owner_eligible",
            "signing_ca_id",
            "signing_ca_fingerprint",
            "signing_ca_key",
        )
    )


# Compiled once per connection: building and compiling this queryset costs Django several times what
# the database spends running it.
_ISSUING_READ = Statement(_issuing_read, grant_id=int, at=datetime)


def _loaded(model, values: dict):
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db("default", names, [values[name] for name in names])


def _grant_from_row(row: dict) -> Grant:
    grant = _loaded(Grant, {name: row[name] for name in _GRANT_FIELDS})
    grant.role = _loaded(Role, {"id": row["role_id"], **{name: row[f"role__{name}"] for name in _ROLE_FIELDS}})
    grant.user = _loaded(User, {"id": row["user_id"], **{name: row[f"user__{name}"] for name in _OWNER_FIELDS}})
    resource = None
    if row["resource_id"] is not None:
        resource = _loaded(
            Resource, {"id": row["resource_id"], **{name: row[f"resource__{name}"] for name in _RESOURCE_FIELDS}}
        )
    grant.resource = resource
    return grant


def certificate_issue(*, grant: Grant | int, user, public_key: str, at: datetime | None = None) -> IssuedCertificate:
    """Sign an OpenSSH user certificate for ``public_key``, scoped to ``grant`` and ending with it.

    Only for the grant's owner, only while the grant is active and the owner
    still eligible (the access check's rules). ``grant`` is a grant or its id;
    no such grant is refused as someone else's is (``NOT_OWNER``).

    One read decides and gives what the certificate says; one write stores
    the certificate and its audit event, on PostgreSQL in a single statement
    (its own transaction) that locks the grant row and inserts nothing unless,
    with the lock held, the grant is still unrevoked and within its window,
    its owner active and eligible and the CA that signed still the signing
    one. So a revocation either comes first (no certificate) or after (the
    certificate's key is then listed by ``ssh_revoked_public_keys``). If
    anything changed in between, the issue is decided again from a new read.
    On PostgreSQL that write also confirms everything else the certificate is
    made of, so the next certificate for the same grant and owner reuses the
    read behind the last one (``_remembered``) and costs the write alone.
    """
    grant_id = grant.pk if isinstance(grant, Grant) else grant
    remembered = True
    # 63 random bits make a repeated serial all but impossible, so no savepoint guards each insert; the
    # unique constraint is the backstop, and a collision rolls the whole issue back to be drawn again.
    for _attempt in range(4):
        try:
            return _certificate_issue_once(
                grant_id=grant_id, user=user, public_key=public_key, at=at, remembered=remembered
            )
        except _SerialTaken:
            continue
        except _GrantChanged:
            remembered = False
    raise StateConflict("the grant changed while its certificate was being signed; try again", code="retry")


# On PostgreSQL, the row that decided the last certificate of a (grant, owner): the write confirms
# everything in it that the next certificate would be made of (see ``_still_honoured_sql``), so the
# next one needs no read. Anything that does not go through (a refusal, a change) is read afresh.
_remembered: dict[tuple[int, int], dict] = {}
_REMEMBERED_KEPT = 4096


def _certificate_issue_once(
    *, grant_id: int, user, public_key: str, at: datetime | None, remembered: bool
) -> IssuedCertificate:
    decided_at = at or timezone.now()
    key = (grant_id, user.pk)
    row = _remembered.pop(key, None) if remembered else None
    from_memory = row is not None
    if row is None:
        rows = _ISSUING_READ.rows(grant_id=grant_id, at=decided_at)
        if not rows or rows[0]["user_id"] != user.pk:
            raise PermissionRefused(_NOT_OWNER_MESSAGE, code=NOT_OWNER)
        row = rows[0]
    try:
        issued = _certificate_made(row, user=user, public_key=public_key, at=at, decided_at=decided_at)
    except DomainError:
        if from_memory:  # a remembered row never refuses: the refusal is decided from a new read
            raise _GrantChanged from None
        raise
    if connection.vendor == "postgresql" and row["resource_id"] is not None and row["signing_ca_id"] is not None:
        if len(_remembered) >= _REMEMBERED_KEPT:
            _remembered.clear()
        _remembered[key] = row
    return issued


def _certificate_made(row: dict, *, user, public_key: str, at: datetime | None, decided_at: datetime):
    """Decide from ``row``, sign, and write; the certificate as stored."""
    subject = public_key_parse(public_key)
    grant = _grant_from_row(row)
    _refuse_unless_usable(grant, eligible=row["owner_eligible"], at=decided_at)
    principals = grant_ssh_principals(grant)
    ca = ssh_ca_signing_read(SimpleNamespace(**row), at=decided_at)
    valid_after = _epoch(decided_at - BACKDATE)
    # Rounded down: never a second past the grant.
    valid_before = _epoch(grant.expires_at)
    if valid_before <= _epoch(decided_at, up=True):
        raise StateConflict("the grant ends within the second; request access again")
    role = grant.role
    extensions = sorted(ext for attr, ext in ROLE_EXTENSIONS.items() if getattr(role, attr))
    key_id = f"{user.username}@jitportal request={grant.request_id} grant={grant.pk}"
    serial = _serial_new()
    issued = IssuedCertificate(
        grant_id=grant.pk,
        ca_id=ca.pk,
        serial=serial,
        key_id=key_id,
        principals=principals,
        public_key=subject.line,
        public_key_fingerprint=subject.fingerprint,
        certificate=certificate_sign(
            ca=ca,
            subject=subject,
            principals=principals,
            key_id=key_id,
            serial=serial,
            valid_after=valid_after,
            valid_before=valid_before,
            extensions=extensions,
        ),
        valid_after=datetime.fromtimestamp(valid_after, tz=UTC),
        valid_before=datetime.fromtimestamp(valid_before, tz=UTC),
        created_at=decided_at,
    )
    event = {
        "action": "certificate.issued",
        "actor": user,
        "target": grant,
        "data": {
            "serial": serial,
            "principals": principals,
            "fingerprint": subject.fingerprint,
            "ca": ca.fingerprint,
            "key_id": key_id,
            "request": str(grant.request_id),
            "valid_after": issued.valid_after.isoformat(),
            "valid_before": issued.valid_before.isoformat(),
            "extensions": extensions,
        },
    }
    # The clock is read again for the write, so the grant's window is checked as of the lock, not the read.
    _certificate_insert(issued, event=event, row=row, user=user, at=at or timezone.now())
    return issued


def _refuse_unless_usable(grant: Grant, *, eligible: bool, at: datetime) -> None:
    refusal = grant_refusal(grant, at=at, eligible_role_ids={grant.role_id} if eligible else set())
    if refusal is None:
        return
    # A grant outside its window is a state to wait out or renew; one the owner lost is a refusal.
    if grant.state_at(at) != Grant.State.ACTIVE:
        raise StateConflict(refusal, code="grant_not_active")
    raise PermissionRefused(refusal, code="not_honoured")


# --- the write: the certificate and its audit event, only while the grant is still honoured ---------

# Each column the write fills, with its PostgreSQL type.
_CERTIFICATE_COLUMNS = {
    "grant_id": "bigint",
    "ca_id": "bigint",
    "serial": "bigint",
    "key_id": "varchar",
    "principals": "jsonb",
    "public_key": "text",
    "public_key_fingerprint": "varchar",
    "certificate": "text",
    "valid_after": "timestamptz",
    "valid_before": "timestamptz",
    "created_at": "timestamptz",
}
_AUDIT_TYPES = {
    "created_at": "timestamptz",
    "actor_id": "bigint",
    "actor_username": "varchar",
    "action": "varchar",
    "target_type": "varchar",
    "target_id": "varchar",
    "data": "jsonb",
    "prev_mac": "varchar",
    "mac": "varchar",
}


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _still_honoured_sql(*, postgresql: bool) -> str:
    """A SELECT of the grant's id while it is still honoured as decided; ``%(name)s`` parameters.

    The same rules as the read (``grant_refusal``'s window, owner and
    eligibility; ``ssh_ca_signing_columns``' CA), asked again in the write's
    own statement. On PostgreSQL the grant row is locked first, so the answer
    is as of the lock (a concurrent revocation is waited for and seen), and
    everything the certificate is made of (the grant's role and resource, the
    role's logins, selector and extensions, the resource's name and labels,
    the owner's name, the CA's stored key) must still be what the decision read, so that decision
    may come from a row remembered from the previous certificate.
    """
    tables = {
        "grant": Grant,
        "user": User,
        "ca": SSHCertificateAuthority,
        "role": Role,
        "resource": Resource,
        "user_groups": User.groups.through,
        "may_request": Role.requestable_by.through,
    }
    quoted = {name: _q(model._meta.db_table) for name, model in tables.items()}
    flags = "".join(f" AND o.{name} = %(role__{name})s" for name in ROLE_EXTENSIONS)
    template = _STILL_HONOURED_POSTGRESQL if postgresql else _STILL_HONOURED
    return template.format(**quoted, flags=flags)


# Table names from the models, every value a parameter.
_STILL_HONOURED = """SELECT g.id FROM {grant} g
WHERE g.id = %(grant_id)s AND g.user_id = %(user_id)s AND g.revoked_at IS NULL
AND g.starts_at <= %(at)s AND g.expires_at > %(at)s AND g.expires_at >= %(valid_before)s
AND EXISTS (SELECT 1 FROM {user} u WHERE u.id = g.user_id AND u.is_active)
AND EXISTS (SELECT 1 FROM {may_request} r JOIN {user_groups} ug ON ug.group_id = r.group_id
    WHERE r.role_id = g.role_id AND ug.user_id = g.user_id)
AND %(ca_id)s = (SELECT c.id FROM {ca} c WHERE c.retired_at IS NULL OR c.retired_at > %(at)s
    ORDER BY c.created_at DESC, c.id DESC LIMIT 1)"""

_STILL_HONOURED_POSTGRESQL = (
    _STILL_HONOURED.replace("u.is_active)", "u.is_active AND u.username = %(username)s)")  # noqa: S608
    + """
AND g.request_id = %(request_id)s AND g.role_id = %(role_id)s
AND EXISTS (SELECT 1 FROM {ca} k WHERE k.id = %(ca_id)s AND k.private_key = %(ca_key)s)
AND EXISTS (SELECT 1 FROM {role} o WHERE o.id = g.role_id AND o.name = %(role__name)s
    AND o.logins = %(role__logins)s::jsonb AND o.resource_kinds = %(role__resource_kinds)s::jsonb
    AND o.resource_labels = %(role__resource_labels)s::jsonb{flags})
AND (g.resource_id IS NULL AND %(resource_id)s::bigint IS NULL
    OR EXISTS (SELECT 1 FROM {resource} s WHERE s.id = g.resource_id AND s.id = %(resource_id)s
        AND s.kind = %(resource__kind)s AND s.name = %(resource__name)s AND s.labels = %(resource__labels)s::jsonb))
FOR UPDATE OF g"""
)


@functools.cache
def _insert_sql(vendor: str) -> str:
    """The write for ``vendor``; built once (table names from the models, every value a parameter)."""
    postgresql = vendor == "postgresql"

    def selected(prefix: str, columns: dict[str, str]) -> str:
        # PostgreSQL needs the type of a value selected into an INSERT (a bare literal is text); SQLite does not.
        return ", ".join(f"%({prefix}{name})s" + (f"::{kind}" if postgresql else "") for name, kind in columns.items())

    certificates = _q(IssuedCertificate._meta.db_table)
    insert = (
        f"INSERT INTO {certificates} ({', '.join(_CERTIFICATE_COLUMNS)}) SELECT {selected('c_', _CERTIFICATE_COLUMNS)}"
    )
    if not postgresql:
        return f"{insert} FROM ({_still_honoured_sql(postgresql=False)}) honoured RETURNING id"
    audit = _q(AuditEvent._meta.db_table)
    audited = selected("a_", {name: _AUDIT_TYPES[name] for name in AUDIT_INSERT_COLUMNS})
    return (
        f"WITH honoured AS ({_still_honoured_sql(postgresql=True)}),"  # noqa: S608 -- as above
        f" issued AS ({insert} FROM honoured RETURNING id),"
        f" audited AS (INSERT INTO {audit} ({', '.join(AUDIT_INSERT_COLUMNS)})"
        f" SELECT {audited} FROM issued RETURNING id)"
        " SELECT issued.id FROM issued, audited"
    )


def _certificate_insert(issued: IssuedCertificate, *, event: dict, row: dict, user, at: datetime) -> None:
    """Store ``issued`` and its audit event if the grant is still as ``row`` read it; sets ``issued.pk``."""
    adapt = connection.ops.adapt_datetimefield_value
    params: dict = {
        "grant_id": issued.grant_id,
        "user_id": user.pk,
        "at": adapt(at),
        "valid_before": adapt(issued.valid_before),
        "ca_id": issued.ca_id,
    }
    if connection.vendor == "postgresql":
        params.update(
            username=user.username,
            ca_key=row["signing_ca_key"],
            request_id=row["request_id"],
            role_id=row["role_id"],
            resource_id=row["resource_id"],
            **{f"role__{name}": row[f"role__{name}"] for name in ("name", *ROLE_EXTENSIONS)},
            **{f"role__{name}": json.dumps(row[f"role__{name}"]) for name in _ROLE_JSON},
            **{f"resource__{name}": row[f"resource__{name}"] for name in ("kind", "name")},
            resource__labels=json.dumps(row["resource__labels"]),
        )
    for name in _CERTIFICATE_COLUMNS:
        value = getattr(issued, name)
        params[f"c_{name}"] = (
            json.dumps(value) if name == "principals" else adapt(value) if isinstance(value, datetime) else value
        )
    sql = _insert_sql(connection.vendor)
    try:
        if connection.vendor == "postgresql":
            audit = audit_row(**event, created_at=at)
            params.update({f"a_{name}": value for name, value in zip(AUDIT_INSERT_COLUMNS, audit, strict=True)})
            # One statement is one transaction of its own (a savepoint when the caller has one open).
            with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
                written = next(iter(execute_prepared(cursor, sql, params)), None)
        else:
            # SQLite takes its write lock at BEGIN (IMMEDIATE), so the check and both inserts are serialised.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, params)
                written = cursor.fetchone()
                if written is not None:
                    audit_record(**event)
    except IntegrityError as error:
        # The window and the references are checked in the statement, so only the serial can clash.
        raise _SerialTaken from error
    if written is None:
        raise _GrantChanged
    issued.pk = written[0]
    issued._state.adding = False
