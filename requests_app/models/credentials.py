"""The SSH user certificate authority and the certificates it issued."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from jitportal.crypto import EncryptedTextField
from requests_app.models.requests import Grant


class SSHCertificateAuthority(models.Model):
    """An Ed25519 user CA. The newest one not retired signs; every one still trusted is published."""

    name = models.CharField(max_length=100, unique=True)
    public_key = models.TextField()  # OpenSSH format, one line
    private_key = EncryptedTextField()  # OpenSSH PEM, encrypted at rest, never shown
    fingerprint = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)
    # Stops signing at retired_at; stops being published (trusted) at trusted_until.
    retired_at = models.DateTimeField(null=True, blank=True)
    trusted_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "SSH certificate authority"
        verbose_name_plural = "SSH certificate authorities"

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"


class IssuedCertificate(models.Model):
    """One OpenSSH user certificate signed for a grant."""

    grant = models.ForeignKey(Grant, on_delete=models.PROTECT, related_name="certificates")
    ca = models.ForeignKey(SSHCertificateAuthority, on_delete=models.PROTECT, related_name="certificates")
    serial = models.PositiveBigIntegerField(unique=True)
    key_id = models.CharField(max_length=255)
    principals = models.JSONField(default=list)
    public_key = models.TextField()  # the user's key, OpenSSH format
    public_key_fingerprint = models.CharField(max_length=100)
    certificate = models.TextField()
    valid_after = models.DateTimeField()
    valid_before = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(valid_before__gt=models.F("valid_after")), name="certificate_window_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"serial {self.serial} for grant {self.grant_id}"
