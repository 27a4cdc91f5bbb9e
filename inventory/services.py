"""Writes to the inventory. Labels go through here so their index rows stay in step."""

from __future__ import annotations

import re

from django.db import transaction

from inventory.models import Resource, ResourceLabel
from inventory.signals import resources_changed
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


def resource_clean_kind(kind: object) -> str:
    if kind not in Resource.Kind.values:
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
