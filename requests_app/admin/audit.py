"""The audit log in the admin: read-only, for holders of ``audit``."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from audit.models import AuditEvent
from requests_app.admin.base import (
    ReadOnlyModelAdmin,
)

# --- audit log --------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "created_at", "actor_username", "action", "target_type", "target_id", "short_hash")
    list_filter = ("action", "target_type")
    search_fields = ("actor_username", "action", "target_id")
    date_hierarchy = "created_at"
    # The log grows without bound: skip the unfiltered count(*) on every page.
    show_full_result_count = False
    fields = (
        "id",
        "created_at",
        "actor_username",
        "action",
        "target_type",
        "target_id",
        "data_display",
        "prev_hash",
        "hash",
    )
    readonly_fields = fields

    @admin.display(description="hash")
    def short_hash(self, obj: AuditEvent) -> str:
        return obj.hash[:12]

    @admin.display(description="data")
    def data_display(self, obj: AuditEvent):
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True, ensure_ascii=False))
