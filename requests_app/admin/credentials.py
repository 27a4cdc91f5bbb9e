"""SSH certificate authorities and issued certificates in the admin: read-only.

CAs are made and rotated with ``manage.py ssh_ca`` (audited); certificates
only by the API for a grant's owner. The CA private key is never shown: it
is neither a field nor a column here.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html

from requests_app.admin.base import ReadOnlyModelAdmin, change_link
from requests_app.models import IssuedCertificate, SSHCertificateAuthority


@admin.register(SSHCertificateAuthority)
class SSHCertificateAuthorityAdmin(ReadOnlyModelAdmin):
    list_display = ("name", "fingerprint", "status", "created_at", "retired_at", "trusted_until")
    search_fields = ("name", "fingerprint")
    # An explicit list, so the encrypted private key can never appear by default.
    fields = ("name", "fingerprint", "public_key", "status", "created_at", "retired_at", "trusted_until")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).defer("private_key")

    @admin.display(description="status")
    def status(self, obj: SSHCertificateAuthority) -> str:
        now = timezone.now()
        if obj.trusted_until is not None and obj.trusted_until <= now:
            return "no longer trusted"
        if obj.retired_at is None or obj.retired_at > now:
            return "signing"
        return f"trusted until {obj.trusted_until:%Y-%m-%d %H:%M}" if obj.trusted_until else "trusted, not signing"


@admin.register(IssuedCertificate)
class IssuedCertificateAdmin(ReadOnlyModelAdmin):
    list_display = ("serial", "user", "grant_link", "principals_display", "valid_after", "valid_before", "ca_display")
    list_filter = ("ca",)
    search_fields = ("=serial", "grant__user__username", "public_key_fingerprint", "key_id")
    list_select_related = ("grant__user", "ca")
    date_hierarchy = "created_at"
    fields = (
        "serial",
        "key_id",
        "grant_link",
        "user",
        "principals_display",
        "valid_after",
        "valid_before",
        "ca",
        "public_key_fingerprint",
        "public_key",
        "certificate",
        "created_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("grant__user", "ca").defer("ca__private_key")

    @admin.display(description="user", ordering="grant__user__username")
    def user(self, obj: IssuedCertificate):
        return obj.grant.user

    @admin.display(description="grant")
    def grant_link(self, obj: IssuedCertificate):
        return change_link(obj.grant, str(obj.grant_id))

    @admin.display(description="CA", ordering="ca__name")
    def ca_display(self, obj: IssuedCertificate):
        # The name fits the column; the fingerprint, on hover, is what a host compares.
        return format_html('<span title="{}">{}</span>', obj.ca.fingerprint, obj.ca.name)

    @admin.display(description="principals")
    def principals_display(self, obj: IssuedCertificate) -> str:
        shown = ", ".join(obj.principals[:3])
        return f"{shown} (+{len(obj.principals) - 3} more)" if len(obj.principals) > 3 else shown
