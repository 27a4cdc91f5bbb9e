"""Password lockout: how a refused sign-in is answered on every password path.

django-axes counts the failures and decides (settings ``AXES_*``: per
username or per client address, 5 failures in 15 minutes lock for 15
minutes); this module words the refusal once, so the sign-in form, the admin
sign-in and the token endpoint say the same thing.
"""

from __future__ import annotations

import math

from axes.helpers import get_cool_off
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpResponse

LOCKOUT_STATUS = 429


def is_locked_out(request) -> bool:
    """Whether the last ``authenticate(request, ...)`` was refused (or just locked) by the lockout."""
    return bool(getattr(request, "axes_locked_out", False))


def lockout_seconds() -> int:
    # Failures during a lockout are not counted (AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT
    # is off), so a lockout ends at most one cool-off from now: a safe Retry-After.
    return math.ceil(get_cool_off().total_seconds())


def lockout_message() -> str:
    minutes = math.ceil(lockout_seconds() / 60)
    return f"Too many failed sign-in attempts. Try again in {minutes} minutes."


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: the sign-in page as the form rendered it, answered 429.

    The form has already put the lockout message in place of "wrong
    password" (``LockoutFormMixin``), so the person sees the form and why.
    """
    if isinstance(original_response, HttpResponse):
        response = original_response
        response.status_code = LOCKOUT_STATUS
    else:
        response = HttpResponse(lockout_message(), status=LOCKOUT_STATUS, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(lockout_seconds())
    return response


class LockoutFormMixin:
    """Says "locked out" instead of "wrong password" when the lockout refused the attempt."""

    def get_invalid_login_error(self):
        if is_locked_out(self.request):
            return ValidationError(lockout_message(), code="locked_out")
        return super().get_invalid_login_error()


class LockoutAuthenticationForm(LockoutFormMixin, AuthenticationForm):
    pass


class LockoutAdminAuthenticationForm(LockoutFormMixin, AdminAuthenticationForm):
    pass
