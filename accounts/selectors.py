"""Reads that depend on who is asking."""

from __future__ import annotations

from functools import reduce
from operator import or_

from django.db.models import Q

from accounts.models import Role
from inventory.models import Resource, ResourceQuerySet


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
