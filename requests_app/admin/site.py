"""Who may enter the admin at all: not only staff.

Django's admin lets in staff users only. Here reviewers (no staff flag) work
the review queue, and holders of ``audit`` or ``revoke`` read or end grants,
so the site and its sign-in form ask the capability predicates; each model
admin then shows only what its own predicate allows.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth.forms import AuthenticationForm

from accounts import capabilities
from accounts.lockout import LockoutAdminAuthenticationForm


class AdminLoginForm(LockoutAdminAuthenticationForm):
    """Says "locked out" when the lockout refused the attempt, and lets in more than staff."""

    error_messages = {
        **LockoutAdminAuthenticationForm.error_messages,
        "invalid_login": (
            "Please enter the correct %(username)s and password of an account that works in the admin "
            "(a reviewer, an auditor or staff). Both fields may be case-sensitive."
        ),
    }

    def confirm_login_allowed(self, user) -> None:
        AuthenticationForm.confirm_login_allowed(self, user)
        if not capabilities.may_open_admin(user):
            raise forms.ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


def _has_permission(request) -> bool:
    return capabilities.may_open_admin(request.user)


# The project serves the default site (jitportal/urls.py): this is its gate.
admin.site.has_permission = _has_permission
admin.site.login_form = AdminLoginForm
