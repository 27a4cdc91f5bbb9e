"""Admin registrations, one module per concern; importing them registers them."""

from requests_app.admin import credentials, notifications, requests  # noqa: F401
