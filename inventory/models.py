"""The inventory: things people can be given access to."""

from __future__ import annotations

import hashlib
import json
from functools import reduce
from operator import or_

from django.db import connection, models
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Concat, Lower
from django.db.models.lookups import Contains, In, IsNull


class ResourceQuerySet(models.QuerySet):
    def matching_selector(self, kinds: list[str], labels: dict[str, list[str]]) -> ResourceQuerySet:
        """Resources whose kind is listed and whose labels satisfy every key.

        A selector with no kinds matches nothing (deny by default).
        """
        return self.filter(selector_q(kinds, labels))

    def with_label(self, key: str, value: str | None = None, *, by_row: bool = False) -> ResourceQuerySet:
        return self.filter(label_q(key, None if value is None else [value], by_row=by_row))


SEARCH_SEPARATOR = "\n"


def _jsonb() -> bool:
    # PostgreSQL answers label questions from a GIN index on the JSONB column;
    # elsewhere they go to the (key, value) index of the ResourceLabel rows.
    return connection.vendor == "postgresql"


def label_q(key: str, values: list[str] | None, *, by_row: bool = False) -> Q:
    """Resources that have label ``key`` (with one of ``values``, unless None).

    ``by_row`` (PostgreSQL) tests each candidate row's JSONB instead of asking
    the GIN index: for a search whose text already narrows the rows to a few
    through the trigram index. Otherwise the planner may AND in the label's
    bitmap too, and a common label (env=prod) is a third of the inventory read
    from the index to discard all but a few.
    """
    if _jsonb() and by_row:
        present = IsNull(KeyTransform(key, "labels"), False)
        if values is None:
            return Q(present)
        return Q(present) & Q(In(KeyTextTransform(key, "labels"), list(values)))
    if _jsonb():
        if values is None:
            return Q(labels__has_key=key)
        return reduce(or_, (Q(labels__contains={key: value}) for value in values), Q(pk__in=[]))
    rows = ResourceLabel.objects.filter(resource=OuterRef("pk"), key=key)
    if values is not None:
        rows = rows.filter(value__in=list(values))
    return Q(Exists(rows))


def text_q(text: str) -> Q:
    """Resources whose name, address or description holds ``text``, in any case.

    PostgreSQL answers from the trigram index on ``search_text``; SQLite takes
    its candidates from the FTS5 trigram index (for three characters or more,
    the shortest text it indexes) and the same test keeps the answer exact.
    Both sides are folded by the database's lower(), the one that built the column.
    """
    q = Q(Contains(F("search_text"), Lower(Value(text))))
    if connection.vendor == "sqlite" and len(text) >= 3:
        phrase = '"' + text.replace('"', '""') + '"'
        candidates = RawSQL("SELECT rowid FROM inventory_resource_fts WHERE inventory_resource_fts MATCH %s", [phrase])
        q &= Q(pk__in=candidates)
    return q


def selector_q(kinds: list[str], labels: dict[str, list[str]]) -> Q:
    """The Q for a role selector: its kinds, and every label key with an allowed value."""
    if not kinds:
        return Q(pk__in=[])
    q = Q(kind__in=list(kinds))
    for key, values in (labels or {}).items():
        q &= label_q(key, None if "*" in values else list(values))
    return q


def selector_matches(kind: str, labels: dict[str, str], kinds: list[str], selector: dict[str, list[str]]) -> bool:
    """Whether a resource of ``kind`` with ``labels`` satisfies a role selector (``selector_q`` row by row)."""
    if kind not in (kinds or []):
        return False
    for key, values in (selector or {}).items():
        if key not in labels:
            return False
        if "*" not in values and labels[key] not in values:
            return False
    return True


# What a resource's content hash covers: everything a policy file sets but its key (kind, name).
CONTENT_FIELDS = ("address", "labels", "description")


def resource_content_hash(*, address: str, labels: dict, description: str) -> str:
    """A digest of a resource's content, as stored: equal digests mean equal content.

    ``apply`` compares it with the file's resources from one read of (kind,
    name, digest) instead of reading and comparing every column of every row.
    """
    payload = json.dumps([address, labels, description], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


class Resource(models.Model):
    """A server, database, cluster, app or desktop that access can be granted to."""

    class Kind(models.TextChoices):
        NODE = "node", "SSH server"
        DB = "db", "Database"
        KUBE_CLUSTER = "kube_cluster", "Kubernetes cluster"
        APP = "app", "Application"
        WINDOWS_DESKTOP = "windows_desktop", "Windows desktop"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    name = models.CharField(max_length=253)
    address = models.CharField(max_length=255, blank=True)
    # The labels as written; ResourceLabel holds the same pairs, one per row,
    # so that selectors and searches use an index on every database.
    labels = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)
    # resource_content_hash of address, labels and description, set by save() and by the bulk writes
    # in inventory.services (the only other writers). Null (rows older than the column) means unknown:
    # apply then compares the columns themselves and fills it in.
    content_hash = models.CharField(max_length=32, null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # What text search reads: one column, so PostgreSQL answers a substring
    # from one trigram index. Lines apart (a search holding a line break is
    # refused), so no match spans two fields.
    search_text = models.GeneratedField(
        expression=Lower(
            Concat(
                "name",
                Value(SEARCH_SEPARATOR),
                "address",
                Value(SEARCH_SEPARATOR),
                "description",
                output_field=models.TextField(),
            )
        ),
        output_field=models.TextField(),
        db_persist=True,
    )

    objects = ResourceQuerySet.as_manager()

    class Meta:
        ordering = ["kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "name"], name="resource_kind_name_unique"),
        ]
        indexes = [models.Index(fields=["name"], name="resource_name_idx")]

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    def save(self, *args, **kwargs) -> None:
        self.content_hash = resource_content_hash(
            address=self.address, labels=self.labels, description=self.description
        )
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and set(update_fields) & set(CONTENT_FIELDS):
            kwargs["update_fields"] = [*update_fields, "content_hash"]
        super().save(*args, **kwargs)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    def matches(self, kinds: list[str], labels: dict[str, list[str]]) -> bool:
        return selector_matches(self.kind, self.labels, kinds, labels)


class ResourceLabel(models.Model):
    """One label of a resource, kept in step with ``Resource.labels`` by the service."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="label_rows")
    key = models.CharField(max_length=63)
    value = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["resource", "key"], name="resource_label_key_unique"),
        ]
        indexes = [models.Index(fields=["key", "value", "resource"], name="resource_label_kv_idx")]

    def __str__(self) -> str:
        return f"{self.key}={self.value}"
