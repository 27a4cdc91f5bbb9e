"""What hosts ask: the principals a resource accepts and the keys it must refuse.

A principal is ``login@resource-name``, so a host whose
``AuthorizedPrincipalsFile`` lists only the principals naming itself refuses
certificates for other hosts; hosts refuse the subject keys of certificates
whose access ended early (``ssh_revoked_public_keys``, for sshd's ``RevokedKeys``).
"""

from __future__ import annotations

import re
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from inventory.models import Resource
from jitportal.errors import DomainError
from requests_app.models import Grant, IssuedCertificate

# OpenSSH refuses certificates with more principals than this (and so does cryptography).
MAX_PRINCIPALS = 256


# commas (sshd reads those as lists), no quotes, and not a comment.
_PRINCIPAL = re.compile(r"[^\s,\"'#][^\s,\"']*")


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
