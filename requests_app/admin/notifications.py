"""Notification channels (managed here) and the outbox of deliveries (read-only).

A channel's webhook URL (which carries its token) and signing secret are
write-only: the form shows a masked hint, a blank field keeps the stored
value, and neither is ever rendered back, not even after a form error.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.urls import reverse
from django.utils.html import format_html

from accounts import capabilities
from jitportal.admin_display import ConfigurationAdminMixin, clipped
from requests_app.admin.base import ReadOnlyModelAdmin
from requests_app.models import Notification, NotificationChannel
from requests_app.notifications.formats import mask_url
from requests_app.notifications.outbox import notifications_retry

Kind = NotificationChannel.Kind
URL_KINDS = {Kind.SLACK, Kind.MATTERMOST, Kind.WEBHOOK}


class WriteOnlyInput(forms.TextInput):
    """A text box that never renders a value, so a stored or submitted secret is not sent back."""

    def format_value(self, value):
        return None


class NotificationChannelForm(forms.ModelForm):
    webhook_url = forms.CharField(
        label="Webhook URL",
        required=False,
        widget=WriteOnlyInput(attrs={"size": 80, "autocomplete": "off"}),
        help_text="Slack, Mattermost or generic webhook. Encrypted at rest and never shown again.",
    )
    signing_secret = forms.CharField(
        label="Signing secret",
        required=False,
        widget=WriteOnlyInput(attrs={"size": 40, "autocomplete": "off"}),
        help_text="Generic webhooks: the key of the X-Jitportal-Signature HMAC-SHA256. Never shown again.",
    )
    events = forms.MultipleChoiceField(
        choices=NotificationChannel.Event.choices, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = NotificationChannel
        fields = (
            "name",
            "kind",
            "enabled",
            "urgent",
            "webhook_url",
            "signing_secret",
            "email_to",
            "events",
            "roles",
        )
        help_texts = {"roles": "Only requests for these roles; none selected means every role."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        stored_url = self.instance.url if self.instance.pk else ""
        if stored_url:
            masked = mask_url(stored_url)
            self.fields["webhook_url"].widget.attrs["placeholder"] = masked
            self.fields["webhook_url"].help_text = f"Stored: {masked}. Leave blank to keep it."
        if self.instance.pk and self.instance.secret:
            self.fields["signing_secret"].widget.attrs["placeholder"] = "••••••••"
            self.fields["signing_secret"].help_text = "A secret is stored. Leave blank to keep it."

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data["webhook_url"].strip()
        if url:
            # The message names the rule, never the value.
            try:
                URLValidator(schemes=["http", "https"])(url)
            except ValidationError:
                raise ValidationError("Enter a full http:// or https:// URL.") from None
        return url

    def clean_email_to(self) -> str:
        addresses = [a.strip() for a in self.cleaned_data["email_to"].split(",") if a.strip()]
        for address in addresses:
            validate_email(address)
        return ", ".join(addresses)

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        has_url = bool(cleaned.get("webhook_url") or (self.instance.pk and self.instance.url))
        has_secret = bool(cleaned.get("signing_secret") or (self.instance.pk and self.instance.secret))
        if kind in URL_KINDS and not has_url:
            self.add_error("webhook_url", "This kind of channel needs a webhook URL.")
        if kind == Kind.WEBHOOK and not has_secret:
            self.add_error("signing_secret", "A generic webhook needs a signing secret.")
        return cleaned

    def save(self, commit: bool = True):
        channel = super().save(commit=False)
        if self.cleaned_data.get("webhook_url"):
            channel.url = self.cleaned_data["webhook_url"]
        if self.cleaned_data.get("signing_secret"):
            channel.secret = self.cleaned_data["signing_secret"]
        if commit:
            channel.save()
            self.save_m2m()
        return channel


@admin.register(NotificationChannel)
class NotificationChannelAdmin(ConfigurationAdminMixin, admin.ModelAdmin):
    form = NotificationChannelForm
    list_display = ("name", "kind", "enabled", "urgent", "destination", "events_display", "roles_display")
    list_filter = ("kind", "enabled", "urgent")
    search_fields = ("name",)
    filter_horizontal = ("roles",)
    # Shown instead of the write-only inputs to those who may only look.
    view_only_fields = (
        "name",
        "kind",
        "enabled",
        "urgent",
        "destination",
        "secret_status",
        "email_to",
        "events_display",
        "roles",
    )

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request, obj=None) -> bool:
        # Auditors may see where notifications go (masked), not change it.
        return capabilities.may_read_notifications(request.user)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("roles")

    def get_fields(self, request, obj=None):
        if obj is not None and not self.has_change_permission(request, obj):
            return self.view_only_fields
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and not self.has_change_permission(request, obj):
            return self.view_only_fields
        return ()

    @admin.display(description="destination")
    def destination(self, obj: NotificationChannel) -> str:
        if obj.kind == Kind.EMAIL:
            return obj.email_to or "(the requester, or the eligible reviewers)"
        return mask_url(obj.url) or "(none)"

    @admin.display(description="signing secret")
    def secret_status(self, obj: NotificationChannel) -> str:
        return "stored (never shown)" if obj.secret else "(none)"

    @admin.display(description="events")
    def events_display(self, obj: NotificationChannel) -> str:
        return ", ".join(obj.events or []) or "(none)"

    @admin.display(description="roles")
    def roles_display(self, obj: NotificationChannel) -> str:
        return ", ".join(r.name for r in obj.roles.all()) or "(every role)"


@admin.register(Notification)
class NotificationAdmin(ReadOnlyModelAdmin):
    """The outbox: what was sent where, and what is still being retried.

    Read by auditors, and by staff, who manage the channels and need to see their deliveries.
    """

    may_view = staticmethod(capabilities.may_read_notifications)
    refusal = capabilities.refusal_of_any("the audit capability", "the staff flag")

    list_display = (
        "id",
        "event",
        "channel",
        "subject_link",
        "status",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "short_error",
    )
    list_filter = ("status", "event", "channel")
    search_fields = ("subject_key", "last_error")
    date_hierarchy = "created_at"
    fields = (
        "channel",
        "event",
        "subject_link",
        "status",
        "attempts",
        "next_attempt_at",
        "claimed_until",
        "last_error",
        "created_at",
        "delivered_at",
        "payload_display",
    )
    readonly_fields = fields
    actions = ["retry_failed"]

    def has_retry_permission(self, request) -> bool:
        # Whoever may manage the channels may send their failed messages again.
        return capabilities.may_configure(request.user)

    @admin.action(description="Retry the selected failed deliveries now", permissions=["retry"])
    def retry_failed(self, request, queryset) -> None:
        retried = notifications_retry(ids=queryset.values_list("pk", flat=True), by=request.user)
        skipped = queryset.count() - retried
        messages.success(request, f"Queued {retried} failed deliveries again.")
        if skipped:
            messages.info(request, f"{skipped} selected were not failed and were left as they are.")

    def get_queryset(self, request):
        # The channel's name is all a row shows of it: skip decrypting its secrets.
        return super().get_queryset(request).select_related("channel").defer("channel__url", "channel__secret")

    @admin.display(description="about")
    def subject_link(self, obj: Notification):
        kind, _, key = obj.subject_key.partition(":")
        names = {"request": "accessrequest", "grant": "grant"}
        if kind not in names:
            return obj.subject_key
        url = reverse(f"admin:requests_app_{names[kind]}_change", args=[key])
        return format_html('<a href="{}">{} {}</a>', url, kind, key[:8])

    @admin.display(description="last error")
    def short_error(self, obj: Notification) -> str:
        return clipped(obj.last_error)

    @admin.display(description="message")
    def payload_display(self, obj: Notification):
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, ensure_ascii=False))
