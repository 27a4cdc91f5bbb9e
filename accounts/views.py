"""Signing in (password and SSO) and the API tokens page.

Thin: the provider is spoken to by ``accounts.oidc``, users and tokens are
written by ``accounts.services``; a refusal is audited and shown, and
changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts.backends import password_login_enabled
from accounts.forms import TokenCreateForm
from accounts.lockout import LockoutAuthenticationForm
from accounts.mfa import mfa_session_verified_at
from accounts.models import ApiToken
from accounts.oidc import OidcFailed, oidc_authorize_redirect, oidc_callback_claims, oidc_enabled
from accounts.services import token_create, token_revoke, user_sign_in_oidc
from audit.services import audit_record
from jitportal.errors import DomainError
from jitportal.net import client_address

_NEXT_KEY = "oidc_next"
_OIDC_BACKEND = "accounts.backends.OidcBackend"


def sign_in_options() -> dict:
    """What the sign-in pages offer: SSO when configured, the password form unless it is off."""
    return {
        "sso_enabled": oidc_enabled(),
        "sso_label": settings.JITPORTAL_OIDC_BUTTON_LABEL,
        "password_login": password_login_enabled(),
        "break_glass": bool(settings.JITPORTAL_BREAK_GLASS_LOGIN),
    }


class LoginView(auth_views.LoginView):
    """The portal's sign-in page: the SSO button when configured, the password form unless turned off.

    With password sign-in off the form still answers for break-glass
    accounts (``?local=1``); the backend refuses everyone else.
    """

    authentication_form = LockoutAuthenticationForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        options = sign_in_options()
        options["show_password_form"] = options["password_login"] or (
            options["break_glass"] and (self.request.GET.get("local") == "1" or self.request.method == "POST")
        )
        return {**context, **options}


def _safe_next(request: HttpRequest, value: str | None) -> str:
    if value and url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return value
    return settings.LOGIN_REDIRECT_URL


def oidc_login(request: HttpRequest) -> HttpResponse:
    if not oidc_enabled():
        raise Http404("SSO is not configured")
    request.session[_NEXT_KEY] = _safe_next(request, request.GET.get("next"))
    try:
        return oidc_authorize_redirect(request, redirect_uri=request.build_absolute_uri(reverse("oidc-callback")))
    except OidcFailed as exc:
        return _sign_in_failed(request, exc, status=502)


def oidc_callback(request: HttpRequest) -> HttpResponse:
    if not oidc_enabled():
        raise Http404("SSO is not configured")
    try:
        claims = oidc_callback_claims(request)
        user = user_sign_in_oidc(issuer=settings.JITPORTAL_OIDC_ISSUER, claims=claims)
    except DomainError as exc:
        return _sign_in_failed(request, exc)
    next_url = request.session.pop(_NEXT_KEY, settings.LOGIN_REDIRECT_URL)
    # login() rotates the session key (no fixation) and keeps the state Authlib already cleared.
    auth_login(request, user, backend=_OIDC_BACKEND)
    return redirect(_safe_next(request, next_url))


def _sign_in_failed(request: HttpRequest, exc: DomainError, *, status: int = 400) -> HttpResponse:
    audit_record(
        action="auth.failed",
        target_type="user",
        target_id="",
        data={
            "method": "oidc",
            "reason": exc.message[:500],
            "code": exc.code,
            "client": client_address(request),
            "path": request.path,
        },
    )
    context = {
        **sign_in_options(),
        "show_password_form": False,
        "sso_error": "Single sign-on failed: the identity provider's answer was refused. "
        "Try again, or ask your administrator.",
    }
    return render(request, "registration/login.html", context, status=status)


# --- API tokens ----------------------------------------------------------------------------


def session_token_create(request: HttpRequest, *, name: str, lifetime: timedelta) -> tuple[ApiToken, str]:
    """Make a token for the signed-in person from this session.

    The one way the portal's pages make tokens, so facts about the session
    (how it was signed in, what it has verified) can be carried to the token
    in one place: a second factor verified by this session goes with the
    token, so it may review roles that require one while that verification
    is fresh.
    """
    return token_create(
        user=request.user,
        name=name,
        lifetime=lifetime,
        by=request.user,
        mfa_verified_at=mfa_session_verified_at(request),
    )


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    created = None
    form = TokenCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        token, secret = session_token_create(
            request, name=form.cleaned_data["name"], lifetime=form.cleaned_data["lifetime"]
        )
        created = {"token": token, "secret": secret}
        form = TokenCreateForm()
    rows = ApiToken.objects.filter(user=request.user).order_by("-created")
    response = render(request, "portal/tokens.html", {"form": form, "created": created, "tokens": rows})
    if created:
        # The secret is on this page once: no cache may keep a copy.
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke_view(request: HttpRequest, token_key: str) -> HttpResponse:
    mine = list(ApiToken.objects.filter(user=request.user, token_key=token_key))
    if not mine:
        raise Http404("no such token")
    token_revoke(tokens=mine, by=request.user)
    messages.success(request, f"Token {mine[0].name or token_key} revoked.")
    return redirect("tokens")
