from django.apps import AppConfig


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self):
        # Connects the sign-in receivers that write auth.login / auth.failed / auth.locked, the one
        # that keeps the role scopes in step with the inventory's writes, and the deploy checks.
        from accounts import checks, scope, signin  # noqa: F401
