from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from accounts.api.views import MeView, ResourceViewSet, RoleViewSet, TokenView
from accounts.lockout import LockoutAuthenticationForm
from requests_app.api.credentials import ResourceSSHPrincipalsView, RevokedKeysView, SSHCAView
from requests_app.api.views import AccessCheckView, AccessRequestViewSet, AuditEventViewSet, GrantViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("resources", ResourceViewSet, basename="resource")
router.register("roles", RoleViewSet, basename="role")
router.register("requests", AccessRequestViewSet, basename="accessrequest")
router.register("grants", GrantViewSet, basename="grant")
router.register("audit", AuditEventViewSet, basename="auditevent")

api_v1 = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("me/", MeView.as_view(), name="api-me"),
    path("access-check/", AccessCheckView.as_view(), name="api-access-check"),
    path("ca/ssh/", SSHCAView.as_view(), name="api-ssh-ca"),
    path("ssh/revoked-keys/", RevokedKeysView.as_view(), name="api-ssh-revoked-keys"),
    path("resources/<str:ref>/ssh-principals/", ResourceSSHPrincipalsView.as_view(), name="api-ssh-principals"),
    path("", include(router.urls)),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True, authentication_form=LockoutAuthenticationForm),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The self-service pages last: "" is their root.
    path("", include("requests_app.urls")),
]
