"""Which roles match which resources, worked out ahead of time: the ``RoleResource`` rows.

A requester's search reads them (``selectors.resources_searchable_by``), so
they must follow every write: ``role_scope_sync`` is the one function that
writes them, called for a role whose selector changed (the role admin,
``apply``) and for resources whose kind or labels changed (the inventory's
``resources_changed``, sent by its service and admin). Loaders that bypass
those (bulk inserts) call it themselves, set-based.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.dispatch import receiver

from accounts.models import Role, RoleResource
from inventory.models import Resource
from inventory.signals import resources_changed

CHUNK = 5000


def role_scope_sync(*, roles: Iterable[Role] = (), resource_ids: Iterable[int] = ()) -> None:
    """Make the rows of ``roles`` (against every resource) and of ``resource_ids`` (against every role) true.

    Each role costs two set-based statements whatever its size (rows it no
    longer matches go, rows it newly matches come); resources are compared
    with every role's selector in memory, a chunk at a time.
    """
    with transaction.atomic():
        for role in roles:
            _sync_role(role)
        ids = list(dict.fromkeys(resource_ids))
        if ids:
            every_role = list(Role.objects.only("pk", "resource_kinds", "resource_labels"))
            for start in range(0, len(ids), CHUNK):
                _sync_resources(ids[start : start + CHUNK], every_role)


def _sync_role(role: Role) -> None:
    matching = Resource.objects.filter(role.resource_q()).order_by()
    RoleResource.objects.filter(role=role).exclude(Exists(matching.filter(pk=OuterRef("resource_id")))).delete()
    missing = matching.exclude(Exists(RoleResource.objects.filter(role=role, resource=OuterRef("pk")))).values("pk")
    try:
        sql, params = missing.query.sql_with_params()
    except EmptyResultSet:  # a selector that matches nothing (no kinds)
        return
    table = connection.ops.quote_name(RoleResource._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (role_id, resource_id) SELECT %s, missing.* FROM ({sql}) AS missing",  # noqa: S608 -- the table name and the ORM's own SQL; values are parameters
            [role.pk, *params],
        )


def _sync_resources(ids: list[int], roles: list[Role]) -> None:
    resources = Resource.objects.filter(pk__in=ids).only("pk", "kind", "labels").order_by()
    wanted = [RoleResource(role=role, resource=r) for r in resources for role in roles if role.matches(r)]
    RoleResource.objects.filter(resource_id__in=ids).delete()
    RoleResource.objects.bulk_create(wanted, batch_size=CHUNK)


@receiver(resources_changed, dispatch_uid="jitportal-role-scope")
def _resources_changed(sender, resource_ids: list[int], **kwargs) -> None:
    role_scope_sync(resource_ids=resource_ids)
