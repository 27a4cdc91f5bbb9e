"""Reads that depend on who is asking."""

from __future__ import annotations

from functools import reduce
from operator import or_

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet

from accounts.models import Role
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

    Deny by default: no requestable role, no resources, staff included.
    """
    if roles is None:
        roles = roles_requestable_by(user)
    if not roles:
        return Resource.objects.none()
    return Resource.objects.filter(reduce(or_, (role.resource_q() for role in roles), Q(pk__in=[])))


def roles_matching(resource: Resource, roles: list[Role]) -> list[Role]:
    return [role for role in roles if role.matches(resource)]
