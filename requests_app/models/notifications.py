"""Notification channels and the transactional outbox of deliveries."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Role
from jitportal.crypto import EncryptedTextField


class NotificationChannel(models.Model):
    """Where notifications go: a chat webhook, a signed generic webhook, or email."""

    class Kind(models.TextChoices):
        SLACK = "slack", "Slack incoming webhook"
        MATTERMOST = "mattermost", "Mattermost incoming webhook"
        WEBHOOK = "webhook", "Generic webhook (signed JSON)"
        EMAIL = "email", "Email"

    class Event(models.TextChoices):
        REQUEST_CREATED = "request.created", "Request created (to reviewers)"
        REQUEST_APPROVED = "request.approved", "Request approved (to the requester)"
        REQUEST_DENIED = "request.denied", "Request denied (to the requester)"
        REQUEST_EXPIRED = "request.expired", "Request expired (to the requester)"
        GRANT_EXPIRING = "grant.expiring", "Grant ends soon (to the requester)"
        GRANT_ENDED = "grant.ended", "Grant ended (to the requester)"
        REQUEST_BREAK_GLASS = "request.break_glass", "Break-glass access taken, review it (to reviewers, urgent)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    # Secrets at rest are Fernet tokens; the admin never shows them back in full.
    url = EncryptedTextField(blank=True)
    secret = EncryptedTextField(blank=True)
    email_to = models.TextField(blank=True, help_text="Comma-separated addresses (email channels).")
    events = models.JSONField(default=list, blank=True)
    # An urgent channel gets every break-glass announcement whatever its events say.
    urgent = models.BooleanField(
        default=False, help_text="Also send every break-glass announcement here, whatever the events."
    )
    # Empty means every role.
    roles = models.ManyToManyField(Role, blank=True, related_name="notification_channels")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Notification(models.Model):
    """One message for one channel, written in the transaction of its event.

    Delivery happens after commit; a claim with a lease (``claimed_until``)
    lets a message whose worker died be picked up again.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="notifications")
    event = models.CharField(max_length=32)
    # What the message is about, so one event is never queued twice per channel.
    subject_key = models.CharField(max_length=100)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # When the row was last handed to a worker: the retry sweep re-sends only
    # hand-offs older than the lease, not rows still waiting in the queue.
    handed_off_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "event", "subject_key"], name="notification_once_per_channel_event"
            ),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="notification_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.channel_id} ({self.status})"
