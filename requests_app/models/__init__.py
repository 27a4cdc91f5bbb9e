"""requests_app models, one module per concern."""

from requests_app.models.credentials import IssuedCertificate, SSHCertificateAuthority
from requests_app.models.notifications import Notification, NotificationChannel
from requests_app.models.requests import (
    MAX_REASON_LENGTH,
    AccessRequest,
    AccessRequestQuerySet,
    Grant,
    GrantQuerySet,
    Review,
    grant_refusal,
)
from requests_app.models.sweeps import SweepRun

__all__ = [
    "MAX_REASON_LENGTH",
    "AccessRequest",
    "AccessRequestQuerySet",
    "Grant",
    "GrantQuerySet",
    "IssuedCertificate",
    "Notification",
    "NotificationChannel",
    "Review",
    "SSHCertificateAuthority",
    "SweepRun",
    "grant_refusal",
]
