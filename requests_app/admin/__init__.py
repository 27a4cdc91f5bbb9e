"""Admin registrations, one module per concern; importing them registers them."""

from requests_app.admin import audit, credentials, grants, notifications, requests  # noqa: F401
