"""The access API under /api/v1/: requests, grants, the audit log, the access check and SSH credentials."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from requests_app.api.views import AccessCheckView, AccessRequestViewSet, AuditEventViewSet, GrantViewSet
from requests_app.credentials.api import ResourceSSHPrincipalsView, RevokedKeysView, SSHCAView

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("requests", AccessRequestViewSet, basename="accessrequest")
router.register("grants", GrantViewSet, basename="grant")
router.register("audit", AuditEventViewSet, basename="auditevent")

urlpatterns = [
    path("access-check/", AccessCheckView.as_view(), name="api-access-check"),
    path("ca/ssh/", SSHCAView.as_view(), name="api-ssh-ca"),
    path("ssh/revoked-keys/", RevokedKeysView.as_view(), name="api-ssh-revoked-keys"),
    path("resources/<str:ref>/ssh-principals/", ResourceSSHPrincipalsView.as_view(), name="api-ssh-principals"),
    path("", include(router.urls)),
]
