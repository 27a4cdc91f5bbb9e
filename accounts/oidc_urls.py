"""Single sign-on, mounted at /auth/oidc/: the redirect to the identity provider and its callback."""

from __future__ import annotations

from django.urls import path

from accounts import views

urlpatterns = [
    path("login/", views.oidc_login, name="oidc-login"),
    path("callback/", views.oidc_callback, name="oidc-callback"),
]
