"""Who may sign in with a password, and the backend OIDC sessions are kept by.

Every password path (the sign-in page, the admin sign-in, the token
endpoint) ends in ``authenticate()``, so the switch
``JITPORTAL_PASSWORD_LOGIN`` is honoured here once and no form or view can
forget it.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.backends import ModelBackend


def password_login_enabled() -> bool:
    return settings.JITPORTAL_PASSWORD_LOGIN


def is_break_glass(username: str | None) -> bool:
    """Whether ``username`` is named as a break-glass account (only a superuser's password is then taken)."""
    return bool(username) and username in settings.JITPORTAL_BREAK_GLASS_LOGIN


def password_login_allowed(username: str | None) -> bool:
    """Whether a password may be tried for ``username`` at all (the superuser test comes after the password)."""
    return password_login_enabled() or is_break_glass(username)


class PasswordBackend(ModelBackend):
    """Django's password check, refused outright while password sign-in is off.

    With password sign-in off, only a username named in
    ``JITPORTAL_BREAK_GLASS_LOGIN`` that belongs to an active superuser gets
    in: naming an ordinary account there gives it nothing.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get("username")
        if not password_login_allowed(username):
            return None
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None or password_login_enabled():
            return user
        if not user.is_superuser:
            return None
        user.break_glass = True
        return user

    def get_user(self, user_id):
        # A session signed in by password ends when password sign-in is turned off,
        # except a break-glass superuser's: the switch takes effect at once, not at expiry.
        user = super().get_user(user_id)
        if user is None or password_login_enabled():
            return user
        return user if is_break_glass(user.username) and user.is_superuser else None


class OidcBackend(ModelBackend):
    """Keeps the sessions the OIDC callback signs in; it never takes a password."""

    def authenticate(self, request, **kwargs):
        return None
