"""The *Two-factor* pages: enrol TOTP and passkeys, verify one, remove one.

Thin: every rule is in ``accounts.mfa``; these pages carry the WebAuthn
challenge between its two requests in the session and turn a ``DomainError``
into a message (pages) or a 4xx JSON answer (the WebAuthn calls).
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts import mfa
from jitportal.errors import DomainError

_CHALLENGE = "mfa_webauthn_challenge"


def _safe_next(request: HttpRequest) -> str:
    """The ``next`` asked for when it stays on this site, else ""."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return ""


def _next(request: HttpRequest) -> str:
    return _safe_next(request) or reverse("mfa-security")


def _with_next(name: str, next_url: str) -> str:
    return f"{reverse(name)}?{urlencode({'next': next_url})}" if next_url else reverse(name)


def _problem(error: DomainError) -> JsonResponse:
    return JsonResponse(
        {"detail": error.message, "code": error.code, **({"field": error.field} if error.field else {})},
        status=error.status_code,
    )


def _json_body(request: HttpRequest) -> dict:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise DomainError("the body is not JSON", field="body") from None
    if not isinstance(body, dict):
        raise DomainError("the body must be a JSON object", field="body")
    return body


def _credential(body: dict) -> dict:
    """The browser's answer to a passkey ceremony, as the page's script posts it."""
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise DomainError("must be the browser's answer", field="credential")
    return credential


def _take_challenge(request: HttpRequest) -> str:
    # One use only: a captured answer cannot be replayed against the same challenge.
    challenge = request.session.pop(_CHALLENGE, None)
    if not isinstance(challenge, str) or not challenge:
        raise mfa.MfaRefused("no passkey ceremony is in progress; start again", field="credential")
    return challenge


@login_required
def security(request: HttpRequest) -> HttpResponse:
    factors = mfa.mfa_factors(user=request.user)
    verified_at = mfa.mfa_session_verified_at(request)
    context = {
        "factors": factors,
        "verified_at": verified_at,
        "fresh": mfa.mfa_fresh(verified_at, at=timezone.now()),
        "next": _safe_next(request),
    }
    return render(request, "portal/mfa_security.html", context)


@login_required
def totp_setup(request: HttpRequest) -> HttpResponse:
    """GET: a new secret, shown once (URI and QR code); POST: a code from it confirms it."""
    next_url = _next(request)
    if request.method == "POST":
        try:
            at = mfa.totp_confirm(
                user=request.user,
                code=request.POST.get("code", ""),
                verified_at=mfa.mfa_session_verified_at(request),
            )
        except (mfa.MfaRefused, mfa.MfaThrottled) as error:
            # The same secret again: the app has it already, only the code was wrong.
            pending = mfa.totp_pending_uri(user=request.user)
            if pending is not None:
                return _totp_setup_page(request, pending, next_url, error=error)
            messages.error(request, f"Not set up: {error.message}.")
            return redirect(_with_next("mfa-totp-setup", next_url))
        except DomainError as error:
            messages.error(request, f"Not set up: {error.message}.")
            return redirect("mfa-security")
        mfa.mfa_session_mark(request, at=at)
        messages.success(request, "Authenticator app set up.")
        return redirect(next_url)
    try:
        _device, uri = mfa.totp_begin(user=request.user, verified_at=mfa.mfa_session_verified_at(request))
    except mfa.MfaRequired as error:
        messages.info(request, f"{error.message}.")
        return redirect(_with_next("mfa-verify", _with_next("mfa-totp-setup", _safe_next(request))))
    except DomainError as error:
        messages.error(request, f"{error.message}.")
        return redirect("mfa-security")
    return _totp_setup_page(request, uri, next_url)


def _totp_setup_page(request: HttpRequest, uri: str, next_url: str, *, error: DomainError | None = None):
    qr = segno.make(uri, error="m").svg_inline(scale=4, title="TOTP QR code")
    context = {"uri": uri, "qr": qr, "next": next_url, "error": error.message if error else None}
    response = render(request, "portal/mfa_totp_setup.html", context, status=error.status_code if error else 200)
    # The secret is in this page: no cache may keep it.
    response["Cache-Control"] = "no-store"
    return response


@login_required
def verify(request: HttpRequest) -> HttpResponse:
    next_url = _next(request)
    factors = mfa.mfa_factors(user=request.user)
    if not factors.any:
        messages.info(request, "Set up a second factor first; you will then be taken back.")
        return redirect(_with_next("mfa-security", _safe_next(request)))
    error = None
    status = 200
    if request.method == "POST":
        try:
            at = mfa.totp_verify(user=request.user, code=request.POST.get("code", ""))
        except DomainError as refused:
            error, status = refused.message, refused.status_code
        else:
            mfa.mfa_session_mark(request, at=at)
            return redirect(next_url)
    context = {"factors": factors, "next": next_url, "error": error}
    return render(request, "portal/mfa_verify.html", context, status=status)


@login_required
@require_POST
def remove(request: HttpRequest) -> HttpResponse:
    raw_pk = request.POST.get("pk") or None
    try:
        mfa.mfa_factor_remove(
            user=request.user,
            kind=request.POST.get("kind", ""),
            pk=int(raw_pk) if raw_pk and raw_pk.isdigit() else None,
            verified_at=mfa.mfa_session_verified_at(request),
        )
    except mfa.MfaRequired:
        messages.info(request, "Verify a second factor first, then remove it.")
        return redirect(_with_next("mfa-verify", reverse("mfa-security")))
    except DomainError as error:
        messages.error(request, f"Not removed: {error.message}.")
    else:
        messages.success(request, "Second factor removed.")
    return redirect("mfa-security")


@login_required
@require_POST
def webauthn_register_options(request: HttpRequest) -> HttpResponse:
    try:
        options, challenge = mfa.webauthn_registration_options(
            user=request.user,
            rp_id=settings.JITPORTAL_WEBAUTHN_RP_ID,
            rp_name="jitportal",
            verified_at=mfa.mfa_session_verified_at(request),
        )
    except DomainError as error:
        return _problem(error)
    request.session[_CHALLENGE] = challenge
    return HttpResponse(options, content_type="application/json")


@login_required
@require_POST
def webauthn_register(request: HttpRequest) -> HttpResponse:
    try:
        body = _json_body(request)
        credential = _credential(body)
        name = body.get("name")
        stored = mfa.webauthn_register(
            user=request.user,
            credential=credential,
            challenge=_take_challenge(request),
            rp_id=settings.JITPORTAL_WEBAUTHN_RP_ID,
            origin=settings.JITPORTAL_WEBAUTHN_ORIGIN,
            name=name if isinstance(name, str) else "",
            verified_at=mfa.mfa_session_verified_at(request),
        )
    except DomainError as error:
        return _problem(error)
    # Registering proved possession of the authenticator just now.
    mfa.mfa_session_mark(request, at=stored.created_at)
    messages.success(request, f"Passkey {stored.name!r} added.")
    return JsonResponse({"id": stored.pk, "redirect": _next(request)}, status=201)


@login_required
@require_POST
def webauthn_verify_options(request: HttpRequest) -> HttpResponse:
    options, challenge = mfa.webauthn_authentication_options(user=request.user, rp_id=settings.JITPORTAL_WEBAUTHN_RP_ID)
    request.session[_CHALLENGE] = challenge
    return HttpResponse(options, content_type="application/json")


@login_required
@require_POST
def webauthn_verify(request: HttpRequest) -> HttpResponse:
    try:
        body = _json_body(request)
        credential = _credential(body)
        at = mfa.webauthn_verify(
            user=request.user,
            credential=credential,
            challenge=_take_challenge(request),
            rp_id=settings.JITPORTAL_WEBAUTHN_RP_ID,
            origin=settings.JITPORTAL_WEBAUTHN_ORIGIN,
        )
    except DomainError as error:
        return _problem(error)
    mfa.mfa_session_mark(request, at=at)
    return JsonResponse({"redirect": _next(request)})
