"""The access check: does a user hold a live grant for a resource now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from accounts.models import Role
from inventory.models import Resource
from inventory.selectors import resource_lookup
from jitportal.statements import Statement
from requests_app.models import Grant, grant_refusal

# --- access check -----------------------------------------------------------


NO_GRANT = "no active grant covers this resource"


class Decision(StrEnum):
    """The stable codes of an access decision, for machines (the CLI, host agents); ``reason`` is for people."""

    ALLOWED = "allowed"
    NO_GRANT = "no_grant"  # no live grant covers the resource (or no such resource: not told apart)
    LOGIN_NOT_ALLOWED = "login_not_allowed"  # a grant covers it, but its role does not allow this login
    USER_INACTIVE = "user_inactive"
    NOT_HONOURED = "not_honoured"  # a grant covers it but is no longer honoured (revoked, eligibility lost)


@dataclass
class AccessDecision:
    allowed: bool
    grant: Grant | None = None
    reason: str = ""
    code: str = Decision.ALLOWED

    @property
    def expires_at(self) -> datetime | None:
        return self.grant.expires_at if self.grant else None


def _covering_latest(*, user_id: int, at: datetime, resources: QuerySet) -> QuerySet:
    """Per role, the user's latest-ending active grant that could cover the one resource of ``resources``.

    A grant covers it when it is on that resource or role-wide; whether its
    role matches the resource is decided from the returned selector and
    labels (``Role.matches``), as the rest of the portal decides it. Each row
    carries the role's selector and logins, whether the user may still
    request the role (as ``Role.objects.requestable_by`` asks it) and the
    resource itself (uncorrelated subqueries, run once per statement), so the
    whole decision is one statement that reads a row per role however many
    grants the user holds.
    """
    resource = resources.order_by()
    covering = (
        Grant.objects.active(at=at)
        .filter(user_id=user_id)
        .filter(Q(resource_id=Subquery(resource.values("pk"))) | Q(resource__isnull=True))
    )
    # One probe per role down the (user, expires_at) index, stopping at the first row.
    latest = Role.objects.filter(pk__in=covering.values("role_id")).annotate(
        grant=Subquery(covering.filter(role_id=OuterRef("pk")).order_by("-expires_at").values("pk")[:1])
    )
    may_request = Role.requestable_by.through.objects.filter(role_id=OuterRef("role_id"), group__user=user_id)
    return (
        Grant.objects.filter(pk__in=latest.values("grant"))
        .annotate(
            eligible=Exists(may_request),
            checked_id=Subquery(resource.values("pk")),
            checked_kind=Subquery(resource.values("kind")),
            checked_name=Subquery(resource.values("name")),
            checked_labels=Subquery(resource.values("labels")),
        )
        .order_by()
        .values(
            "id",
            "role_id",
            "resource_id",
            "starts_at",
            "expires_at",
            "revoked_at",
            "role__name",
            "role__logins",
            "role__resource_kinds",
            "role__resource_labels",
            "eligible",
            "checked_id",
            "checked_kind",
            "checked_name",
            "checked_labels",
        )
    )


# Compiled once per connection: building this queryset costs several times what running it does.
_COVERING_BY_ID = Statement(
    lambda user_id, at, resource_id: _covering_latest(
        user_id=user_id, at=at, resources=Resource.objects.filter(pk=resource_id)
    ),
    user_id=int,
    at=datetime,
    resource_id=int,
)


_COVERING_BY_NAME = Statement(
    lambda user_id, at, kind, name: _covering_latest(
        user_id=user_id, at=at, resources=Resource.objects.filter(kind=kind, name=name)
    ),
    user_id=int,
    at=datetime,
    kind=str,
    name=str,
)


def _loaded(model, values: dict):
    """An instance of ``model`` holding ``values`` (by attname), as if loaded; other fields load on access."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db("default", names, [values[name] for name in names])


def access_check(
    *, user, resource: Resource | str | int | None, login: str | None = None, at: datetime | None = None
) -> AccessDecision:
    """Decide from timestamps, now: an ended grant denies even if no sweep ran.

    ``resource`` is a resource or a reference to one (an id or ``kind/name``;
    a malformed one is a DomainError naming ``resource``). Whether a grant
    still counts is ``grant_refusal``. One statement, compiled once per
    connection, reading a row per role however many grants the user holds:
    per role, the user's latest active grant that could cover the resource,
    with whether the user may still request the role, and the resource.
    Among the roles that match the resource, the answer is the latest-ending
    grant of a role that allows the check, or the refusal of the most
    telling one.
    """
    at = at or timezone.now()
    if not user.is_active:
        return AccessDecision(False, reason="the user is not active", code=Decision.USER_INACTIVE)
    lookup = {"pk": resource.pk} if isinstance(resource, Resource) else resource_lookup(resource)
    if lookup is None:  # no such resource: answered as one without a grant, not to reveal which exist
        return AccessDecision(False, reason=NO_GRANT, code=Decision.NO_GRANT)
    if "pk" in lookup:
        rows = _COVERING_BY_ID.rows(user_id=user.pk, at=at, resource_id=lookup["pk"])
    else:
        rows = _COVERING_BY_NAME.rows(user_id=user.pk, at=at, kind=lookup["kind"], name=lookup["name"])
    if not rows or rows[0]["checked_id"] is None:
        return AccessDecision(False, reason=NO_GRANT, code=Decision.NO_GRANT)
    first = rows[0]
    checked = _loaded(
        Resource,
        {
            "id": first["checked_id"],
            "kind": first["checked_kind"],
            "name": first["checked_name"],
            "labels": first["checked_labels"],
        },
    )
    grants: dict[int, Grant] = {}  # by role: the one grant to answer with
    eligible: set[int] = set()
    for row in rows:
        role = _loaded(
            Role,
            {
                "id": row["role_id"],
                "name": row["role__name"],
                "logins": row["role__logins"],
                "resource_kinds": row["role__resource_kinds"],
                "resource_labels": row["role__resource_labels"],
            },
        )
        # A grant covers the resource only while its role matches it (a relabelled resource drops out).
        if role.pk in grants or not role.matches(checked):
            continue
        grant = _loaded(
            Grant,
            {name: row[name] for name in ("id", "role_id", "resource_id", "starts_at", "expires_at", "revoked_at")},
        )
        grant.user, grant.role = user, role
        grant.resource = checked if grant.resource_id is not None else None
        grants[role.pk] = grant
        if row["eligible"]:
            eligible.add(role.pk)

    def latest(role_ids: list[int]) -> Grant | None:
        return max((grants[pk] for pk in role_ids), key=lambda g: g.expires_at, default=None)

    allowing = [pk for pk in eligible if login is None or login in grants[pk].role.logins]
    grant = latest(allowing)
    if grant is not None and grant_refusal(grant, at=at, eligible_role_ids=eligible) is None:
        return AccessDecision(True, grant=grant)
    grant = latest([pk for pk in grants if pk not in eligible])
    refusal = grant_refusal(grant, at=at, eligible_role_ids=eligible) if grant is not None else None
    if refusal is not None:
        return AccessDecision(False, reason=refusal, code=Decision.NOT_HONOURED)
    refusing = sorted(grants[pk].role.name for pk in eligible)
    if refusing and login is not None:
        reason = f"login {login!r} is not allowed by role {refusing[0]}"
        return AccessDecision(False, reason=reason, code=Decision.LOGIN_NOT_ALLOWED)
    return AccessDecision(False, reason=NO_GRANT, code=Decision.NO_GRANT)
