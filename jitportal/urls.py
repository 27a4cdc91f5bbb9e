"""The root URLconf: each app's routes mounted by name, so the wiring imports no app."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

api_v1 = [
    # The access API's explicit paths (resources/<ref>/ssh-principals/) do not overlap the resources router.
    path("", include("accounts.api.urls")),
    path("", include("requests_app.api.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("accounts/", include("accounts.urls")),
    path("scim/v2/", include("accounts.scim.urls")),
    path("mfa/", include("accounts.mfa_urls")),
    path("auth/oidc/", include("accounts.oidc_urls")),
    path("", include("requests_app.ops_urls")),
    # The self-service pages last: "" is their root.
    path("", include("requests_app.urls")),
]
