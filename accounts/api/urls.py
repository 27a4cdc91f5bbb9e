"""The accounts API under /api/v1/: tokens, the caller, roles and the resources they may search."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from accounts.api.views import MeView, ResourceViewSet, RoleViewSet, TokenView

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("resources", ResourceViewSet, basename="resource")
router.register("roles", RoleViewSet, basename="role")

urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("me/", MeView.as_view(), name="api-me"),
    path("", include(router.urls)),
]
