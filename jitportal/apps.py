from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    """``django.contrib.admin`` serving the portal's site as ``admin.site``."""

    default_site = "requests_app.admin_site.PortalAdminSite"
