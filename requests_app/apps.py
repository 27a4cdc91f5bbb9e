from django.apps import AppConfig


class RequestsAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "requests_app"
    verbose_name = "Access requests"

    def ready(self):
        # Connects the sign-in receivers that write auth.failed / auth.locked.
        from requests_app import signin  # noqa: F401
