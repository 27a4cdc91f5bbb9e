"""The *Two-factor* pages, mounted at /mfa/."""

from __future__ import annotations

from django.urls import path

from accounts import mfa_views as views

urlpatterns = [
    path("", views.security, name="mfa-security"),
    path("verify/", views.verify, name="mfa-verify"),
    path("totp/setup/", views.totp_setup, name="mfa-totp-setup"),
    path("remove/", views.remove, name="mfa-remove"),
    path("webauthn/register/options/", views.webauthn_register_options, name="mfa-webauthn-register-options"),
    path("webauthn/register/", views.webauthn_register, name="mfa-webauthn-register"),
    path("webauthn/verify/options/", views.webauthn_verify_options, name="mfa-webauthn-verify-options"),
    path("webauthn/verify/", views.webauthn_verify, name="mfa-webauthn-verify"),
]
