"""The audit log in the admin: read-only, for holders of ``audit``."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html

from audit.models import AuditCheckpoint, AuditEvent
from requests_app.admin.base import (
    ReadOnlyModelAdmin,
)

# --- audit log --------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    list_display = ("seq", "id", "created_at", "actor_username", "action", "target_type", "target_id", "short_mac")
    list_filter = ("action", "target_type")
    search_fields = ("actor_username", "action", "target_id")
    date_hierarchy = "created_at"
    # The log grows without bound: skip the unfiltered count(*) on every page.
    show_full_result_count = False
    fields = (
        "seq",
        "sealed",
        "id",
        "created_at",
        "actor_username",
        "action",
        "target_type",
        "target_id",
        "data_display",
        "prev_mac",
        "mac",
    )
    readonly_fields = fields

    @admin.display(description="MAC")
    def short_mac(self, obj: AuditEvent) -> str:
        return obj.mac[:12] if obj.sealed else "(unsealed)"

    @admin.display(boolean=True)
    def sealed(self, obj: AuditEvent) -> bool:
        return obj.sealed

    def changelist_view(self, request, extra_context=None):
        # The integrity status sits above the list: the newest checkpoint's verification.
        checkpoint = AuditCheckpoint.objects.order_by("-id").first()
        if checkpoint is None:
            messages.warning(request, "Integrity: no checkpoint yet (manage.py audit_checkpoint writes one).")
        elif checkpoint.ok:
            messages.info(
                request,
                f"Integrity: verified {checkpoint.checked} events and {checkpoint.checkpoints_checked} checkpoints "
                f"at {checkpoint.verified_at:%Y-%m-%d %H:%M:%S} UTC; {checkpoint.unsealed} unsealed.",
            )
        else:
            messages.error(
                request,
                f"Integrity: verification FAILED at {checkpoint.verified_at:%Y-%m-%d %H:%M:%S} UTC: "
                f"{checkpoint.problem}",
            )
        return super().changelist_view(request, extra_context)

    @admin.display(description="data")
    def data_display(self, obj: AuditEvent):
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True, ensure_ascii=False))
