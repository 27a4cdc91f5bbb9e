"""Reads that depend on who is asking."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, QuerySet

from accounts.models import Role, RoleResource
from inventory.models import Resource, ResourceQuerySet


def reviewers_of(roles: list[Role]) -> QuerySet:
    """Active users in a reviewer group of every one of ``roles``: who may review a request for them.

    The one definition of reviewer eligibility seen from the roles' side: the
    review service and its refusal hints, the count of approvals toward a
    threshold, the suggested reviewers and the reviewers e-mailed all use it.
    ``AccessRequestQuerySet.reviewable_by`` is the same rule seen from the
    reviewer's side.
    """
    User = get_user_model()
    if not roles:
        return User.objects.none()
    queryset = User.objects.filter(is_active=True)
    for role in roles:
        queryset = queryset.filter(pk__in=User.objects.filter(groups__reviewable_roles=role).values("pk"))
    return queryset


def roles_requestable_by(user) -> list[Role]:
    return list(Role.objects.requestable_by(user).order_by("name"))


def resources_searchable_by(user, *, roles: list[Role] | None = None) -> ResourceQuerySet:
    """Resources that some role the user may request matches (Teleport's search_as_roles).

    Deny by default: no requestable role, no resources, staff included. An
    indexed join on the role scopes (``RoleResource``, the selectors worked
    out ahead of time), not every role's label tests on every row.
    """
    if roles is None:
        roles = roles_requestable_by(user)
    if not roles:
        return Resource.objects.none()
    scope = RoleResource.objects.filter(resource=OuterRef("pk"), role__in=[role.pk for role in roles])
    return Resource.objects.filter(Exists(scope))


def roles_matching(resource: Resource, roles: list[Role]) -> list[Role]:
    return [role for role in roles if role.matches(resource)]
