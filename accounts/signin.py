"""Sign-ins by password, failed and locked-out ones go to the audit log, on every password path.

A successful OIDC sign-in is audited by ``services.user_sign_in_oidc``, in
the transaction that updates the user and their groups.
"""

from __future__ import annotations

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from accounts.lockout import lockout_seconds
from audit.services import audit_record
from jitportal.net import client_address

# The username is what was typed: an unknown name is recorded as typed (it is
# no secret), cut to the column; the password never leaves the credentials.
_TARGET_LENGTH = 64


def _where(request, username: str | None) -> dict:
    return {
        "username": username or "",
        "client": client_address(request) if request is not None else None,
        "path": getattr(request, "path", ""),
    }


@receiver(user_logged_in, dispatch_uid="jitportal-audit-auth-login")
def audit_sign_in(sender, request, user, **kwargs) -> None:
    if getattr(user, "backend", "") != "accounts.backends.PasswordBackend":
        return
    audit_record(
        action="auth.login",
        actor=user,
        target_type="user",
        target_id=user.username[:_TARGET_LENGTH],
        data={**password_login_data(user), "client": client_address(request) if request is not None else None},
    )


def password_login_data(user) -> dict:
    """What ``auth.login`` says of a password sign-in; a break-glass one is marked as such."""
    return {"method": "password", "break_glass": bool(getattr(user, "break_glass", False))}


@receiver(user_login_failed, dispatch_uid="jitportal-audit-auth-failed")
def audit_sign_in_failed(sender, credentials: dict, request=None, **kwargs) -> None:
    username = credentials.get("username")
    audit_record(
        action="auth.failed",
        target_type="user",
        target_id=(username or "")[:_TARGET_LENGTH],
        data=_where(request, username),
    )


@receiver(user_locked_out, dispatch_uid="jitportal-audit-auth-locked")
def audit_sign_in_locked(sender, request=None, username: str | None = None, ip_address=None, **kwargs) -> None:
    audit_record(
        action="auth.locked",
        target_type="user",
        target_id=(username or "")[:_TARGET_LENGTH],
        data={
            **_where(request, username),
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "locked_for_seconds": lockout_seconds(),
        },
    )
