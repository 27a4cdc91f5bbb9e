"""Probes and metrics, mounted at the site root (outside the API: probes carry no token)."""

from __future__ import annotations

from django.urls import path

from requests_app import ops

urlpatterns = [
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
]
