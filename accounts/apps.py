from django.apps import AppConfig


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self):
        # Connects the sign-in receivers that write auth.failed / auth.locked, and the one
        # that keeps the role scopes in step with the inventory's writes.
        from accounts import scope, signin  # noqa: F401
