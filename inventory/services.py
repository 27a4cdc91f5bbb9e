"""Writes to the inventory. Labels go through here so their index rows stay in step."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection, models, transaction
from django.utils import timezone

from inventory.models import Resource, ResourceLabel, resource_content_hash
from inventory.signals import resources_changed
from jitportal.db import insert_rows
from jitportal.errors import DomainError

LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
MAX_LABEL_VALUE = 255
MAX_RESOURCE_NAME = 253


def label_key_clean(key: object, *, field: str = "labels") -> str:
    """A label key, as resources carry it and role selectors name it."""
    if not isinstance(key, str) or not LABEL_KEY.match(key):
        raise DomainError(f"label key {key!r} is not valid (letters, digits, '.', '_', '-', '/')", field=field)
    return key


def label_value_text(value: object) -> str | None:
    """A label value as stored (text; numbers as their text), or None when it cannot be one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    return str(value)


def validate_labels(labels: object, *, field: str = "labels") -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise DomainError("labels must be a mapping of key to value", field=field)
    clean: dict[str, str] = {}
    for key, value in labels.items():
        label_key_clean(key, field=field)
        text = label_value_text(value)
        if text is None:
            raise DomainError(f"label {key!r} must have a string value", field=field)
        if len(text) > MAX_LABEL_VALUE:
            raise DomainError(f"label {key!r} is longer than {MAX_LABEL_VALUE} characters", field=field)
        clean[key] = text
    return clean


# Read once: TextChoices.values builds a new list on every access, and apply checks every resource.
_KINDS = frozenset(Resource.Kind.values)


def resource_clean_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind not in _KINDS:
        raise DomainError(f"{kind!r} is not one of {', '.join(Resource.Kind.values)}", field="kind")
    return str(kind)


def resource_clean_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise DomainError("is required", field="name")
    if len(name) > MAX_RESOURCE_NAME:
        raise DomainError(f"must be at most {MAX_RESOURCE_NAME} characters", field="name")
    return name


def resource_set_labels(*, resource: Resource, labels: dict[str, str]) -> None:
    """Make the index rows of ``resource`` equal to ``labels`` (already saved on it, with its kind).

    Every write of a resource's kind or labels ends here (the service, the
    admin), so this is where the apps above hear of it.
    """
    with transaction.atomic():
        ResourceLabel.objects.filter(resource=resource).delete()
        ResourceLabel.objects.bulk_create([ResourceLabel(resource=resource, key=k, value=v) for k, v in labels.items()])
        resources_changed.send(sender=Resource, resource_ids=[resource.pk])


def resource_upsert(
    *, kind: str, name: str, address: str = "", labels: dict | None = None, description: str = ""
) -> tuple[Resource, bool]:
    """Create or update a resource by (kind, name); returns (resource, changed)."""
    kind = resource_clean_kind(kind)
    name = resource_clean_name(name)
    labels = validate_labels(labels)
    with transaction.atomic():
        resource = Resource.objects.select_for_update().filter(kind=kind, name=name).first()
        if resource is None:
            resource = Resource.objects.create(
                kind=kind, name=name, address=address or "", labels=labels, description=description or ""
            )
            resource_set_labels(resource=resource, labels=labels)
            return resource, True
        changed = []
        for attr, value in (("address", address or ""), ("labels", labels), ("description", description or "")):
            if getattr(resource, attr) != value:
                setattr(resource, attr, value)
                changed.append(attr)
        if changed:
            resource.save(update_fields=[*changed, "updated_at"])
            if "labels" in changed:
                resource_set_labels(resource=resource, labels=labels)
        return resource, bool(changed)


@dataclass(frozen=True, slots=True)
class ResourceRow:
    """One resource as a bulk write wants it; ``kind``, ``name`` and ``labels`` as the clean functions return them."""

    kind: str
    name: str
    address: str
    labels: dict[str, str]
    description: str


# Rows per round trip: a chunk's names and ids fit under the 999 bound parameters of older SQLite builds.
UPSERT_CHUNK = 900


def _unchanged(rows: Sequence[ResourceRow]) -> set[int]:
    """Indexes of the rows stored exactly as given, from one read of every resource's key and content hash."""
    stored = {
        (kind, name): digest
        for kind, name, digest in Resource.objects.order_by()
        .filter(content_hash__isnull=False)
        .values_list("kind", "name", "content_hash")
        .iterator(chunk_size=10_000)
    }
    if not stored:
        return set()
    return {
        i
        for i, row in enumerate(rows)
        if stored.get((row.kind, row.name))
        == resource_content_hash(address=row.address, labels=row.labels, description=row.description)
    }


def resources_upsert_many(*, rows: Sequence[ResourceRow], chunk_size: int = UPSERT_CHUNK) -> list[list[str] | None]:
    """Create or update many resources by (kind, name), set-based; one answer per row, in order.

    The answer is None for a row that was created, the fields that changed for
    one that was updated, and an empty list for one already as wanted (which is
    not written at all). Each chunk compares with what is stored from plain
    values, locks only the rows it is about to change (and compares those
    again under the lock), and writes the creations, the updates and the label
    index rows with a few statements. All of it runs in one transaction.
    """
    answers: list[list[str] | None] = [[] for _ in rows]
    with transaction.atomic():
        # Rows whose stored hash matches are neither read again, locked nor written; the rest are compared
        # column by column (a concurrent writer may change them until they are locked).
        unchanged = _unchanged(rows)
        rest = [i for i in range(len(rows)) if i not in unchanged]
        for start in range(0, len(rest), chunk_size):
            chunk = rest[start : start + chunk_size]
            for i, answer in zip(chunk, _upsert_chunk([rows[i] for i in chunk]), strict=True):
                answers[i] = answer
    return answers


def _stored(rows: Sequence[ResourceRow], *, lock: bool) -> dict[tuple[str, str], tuple]:
    query = Resource.objects.filter(name__in={row.name for row in rows})
    if lock:
        query = query.select_for_update()
    values = query.order_by().values_list("kind", "name", "pk", *_RESOURCE_FIELDS, "content_hash")
    return {(kind, name): rest for kind, name, *rest in values}


_RESOURCE_FIELDS = ("address", "labels", "description")


def _differences(row: ResourceRow, stored: tuple) -> list[str]:
    return [field for field, value in zip(_RESOURCE_FIELDS, stored[1:-1], strict=True) if getattr(row, field) != value]


def _clean(row: ResourceRow) -> ResourceRow:
    labels = validate_labels(row.labels)
    return ResourceRow(
        resource_clean_kind(row.kind), resource_clean_name(row.name), row.address, labels, row.description
    )


def _upsert_chunk(rows: Sequence[ResourceRow]) -> list[list[str] | None]:
    rows = [_clean(row) for row in rows]
    stored = _stored(rows, lock=False)
    candidates = [
        row for row in rows if (row.kind, row.name) in stored and _differences(row, stored[row.kind, row.name])
    ]
    if candidates:
        # Compared again under the lock: a concurrent writer may have changed or deleted them since.
        locked = _stored(candidates, lock=True)
        for row in candidates:
            key = (row.kind, row.name)
            if key in locked:
                stored[key] = locked[key]
            else:
                del stored[key]
    answers: list[list[str] | None] = []
    created: list[Resource] = []
    updated: list[Resource] = []
    relabel: list[Resource] = []
    rehash: list[Resource] = []
    now = timezone.now()
    for row in rows:
        current = stored.get((row.kind, row.name))
        changed = None if current is None else _differences(row, current)
        answers.append(changed)
        digest = resource_content_hash(address=row.address, labels=row.labels, description=row.description)
        if changed == []:
            if current is not None and current[-1] != digest:
                # As wanted but its hash unknown (or stale): fill it in, which is no change to report.
                rehash.append(Resource(pk=current[0], content_hash=digest))
            continue
        resource = Resource(
            kind=row.kind,
            name=row.name,
            address=row.address,
            labels=row.labels,
            description=row.description,
            content_hash=digest,
        )
        if current is None:
            created.append(resource)
        else:
            resource.pk, resource.updated_at = current[0], now
            updated.append(resource)
            if changed and "labels" in changed:
                relabel.append(resource)
    fields = sorted({field for answer in answers if answer for field in answer})
    _write(created=created, updated=updated, relabel=relabel, fields=fields)
    if rehash:
        Resource.objects.bulk_update(rehash, fields=["content_hash"])
    return answers


def _write(*, created: list[Resource], updated: list[Resource], relabel: list[Resource], fields: list[str]) -> None:
    if created:
        _insert(
            Resource,
            ("kind", "name", "address", "labels", "description", "content_hash", "created_at", "updated_at"),
            created,
        )
        ids = _stored([ResourceRow(r.kind, r.name, "", {}, "") for r in created], lock=False)
        for resource in created:
            resource.pk = ids[resource.kind, resource.name][0]
    if updated:
        Resource.objects.bulk_update(updated, fields=[*fields, "content_hash", "updated_at"])
    if relabel:
        ResourceLabel.objects.filter(resource__in=[r.pk for r in relabel]).delete()
    labels = [
        ResourceLabel(resource_id=r.pk, key=k, value=v) for r in (*created, *relabel) for k, v in r.labels.items()
    ]
    _insert(ResourceLabel, ("resource", "key", "value"), labels)
    # One signal per chunk, like the single write's: the role scopes above follow the new and relabelled rows.
    if created or relabel:
        resources_changed.send(sender=Resource, resource_ids=[r.pk for r in (*created, *relabel)])


def _insert(model: type[models.Model], names: tuple[str, ...], objs: Sequence[models.Model]) -> None:
    """COPY on PostgreSQL; elsewhere one prepared INSERT for every object (bulk_create builds SQL value by value)."""
    if not objs:
        return
    fields = [f for f in model._meta.concrete_fields if f.name in names]
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    for field in fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            for obj in objs:
                field.pre_save(obj, add=True)
    if connection.vendor == "postgresql":
        # COPY: a first apply's thousands of rows in one stream, not one statement each. Its text
        # format takes the plain values (JSON as its text), so no field prepares them one by one.
        names_json = [(f.attname, isinstance(f, models.JSONField)) for f in fields]
        rows = [
            tuple(json.dumps(getattr(obj, name)) if is_json else getattr(obj, name) for name, is_json in names_json)
            for obj in objs
        ]
        insert_rows(table=model._meta.db_table, columns=[f.column for f in fields], rows=rows)
        return
    params = [[f.get_db_prep_save(f.value_from_object(obj), connection) for f in fields] for obj in objs]
    with connection.cursor() as cursor:
        # Table and column names come from the model, values are parameters.
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", params)  # noqa: S608
