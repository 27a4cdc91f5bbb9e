"""Signing in and out of the pages, mounted at /accounts/ (Django's LOGIN_URL)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.lockout import LockoutAuthenticationForm

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True, authentication_form=LockoutAuthenticationForm),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
