"""The portal's admin site: who may enter it, its sign-in form and its index.

Django's admin lets in staff users only. Here reviewers (no staff flag) work
the review queue, and holders of ``audit`` or ``revoke`` read or end grants,
so the site and its sign-in form ask the capability predicates; each model
admin then shows only what its own predicate allows.

This module sits outside the ``requests_app.admin`` package on purpose: the
admin builds its default site (``jitportal.apps.PortalAdminConfig``) before it
imports any app's admin module, and that package registers models as it loads.
"""

from __future__ import annotations

from functools import wraps

from django import forms
from django.contrib import admin
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpResponseRedirect
from django.utils import timezone

from accounts import capabilities
from accounts.lockout import LockoutAdminAuthenticationForm
from accounts.mfa import staff_mfa_redirect
from accounts.views import sign_in_options
from requests_app.selectors import review_summary


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


class PortalAdminSite(admin.AdminSite):
    """The one admin site (``admin.site``): open to whoever has something to do there."""

    site_header = "jitportal"
    site_title = "jitportal"
    login_form = AdminLoginForm

    def has_permission(self, request) -> bool:
        return capabilities.may_open_admin(request.user)

    def admin_view(self, view, cacheable=False):
        """Every admin page, and first, for staff under ``JITPORTAL_REQUIRE_MFA_FOR_STAFF``, a verified second factor.

        Signing out stays open, so someone without a factor can still leave.
        """
        inner = super().admin_view(view, cacheable)

        @wraps(inner)
        def gate(request, *args, **kwargs):
            if view.__name__ != "logout":
                verify = staff_mfa_redirect(request)
                if verify is not None:
                    return HttpResponseRedirect(verify)
            return inner(request, *args, **kwargs)

        return gate

    def login(self, request, extra_context=None):
        # The SSO button beside the password form (templates/admin/login.html).
        return super().login(request, extra_context={**sign_in_options(), **(extra_context or {})})

    def index(self, request, extra_context=None):
        # A small summary for reviewers above the model list (templates/admin/index.html).
        summary = review_summary(user=request.user, at=timezone.now())
        return super().index(request, extra_context={"review_summary": summary, **(extra_context or {})})
