"""Deployment checks of the sign-in settings (``manage.py check --deploy``)."""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.checks import Error, Tags, register

_OIDC_SETTINGS = ("JITPORTAL_OIDC_ISSUER", "JITPORTAL_OIDC_CLIENT_ID", "JITPORTAL_OIDC_CLIENT_SECRET")


@register(Tags.security, deploy=True)
def check_sign_in(app_configs, **kwargs) -> list:
    problems: list = []
    given = [name for name in _OIDC_SETTINGS if getattr(settings, name)]
    if given and len(given) < len(_OIDC_SETTINGS):
        missing = ", ".join(name for name in _OIDC_SETTINGS if name not in given)
        problems.append(
            Error(
                f"OIDC sign-in is half configured: {missing} not set, so the SSO button is not shown.",
                hint="Set all three (a secret may come from <NAME>_FILE), or none.",
                id="jitportal.E001",
            )
        )
    if len(given) == len(_OIDC_SETTINGS):
        if not settings.JITPORTAL_OIDC_ISSUER.startswith("https://"):
            problems.append(
                checks.Warning(
                    "JITPORTAL_OIDC_ISSUER is not an https:// address: "
                    "the code and tokens would cross the network readable.",
                    id="jitportal.W002",
                )
            )
        if "openid" not in settings.JITPORTAL_OIDC_SCOPES.split():
            problems.append(
                Error(
                    "JITPORTAL_OIDC_SCOPES lacks 'openid': "
                    "the provider would send no ID token, and sign-in would fail.",
                    id="jitportal.E003",
                )
            )
    if not settings.JITPORTAL_PASSWORD_LOGIN and len(given) < len(_OIDC_SETTINGS):
        problems.append(
            Error(
                "JITPORTAL_PASSWORD_LOGIN=0 without OIDC configured: nobody but break-glass accounts can sign in.",
                hint="Set JITPORTAL_OIDC_ISSUER, _CLIENT_ID and _CLIENT_SECRET, or turn password sign-in back on.",
                id="jitportal.E004",
            )
        )
    return problems
