"""Second factors: TOTP codes and WebAuthn passkeys, their enrolment, verification and removal.

A verification is remembered in the session (``mfa_session_mark``) as the
time it happened; ``mfa_fresh`` is the one rule for how long it counts (15
minutes) where a fresh one is needed: reviews of roles with
``review_requires_mfa``, adding a factor beside an existing one, and
removing one. An API token made from a
session carries that session's verification time (``ApiToken.mfa_verified_at``)
under the same rule, so it stops counting 15 minutes after the verification.

All use of pyotp and webauthn is here; the pages (``accounts.mfa_views``) only
carry the WebAuthn challenge (base64url text) between its two requests in
the session.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import pyotp
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from accounts.models import ApiToken, TotpDevice, User, WebAuthnCredential
from audit.services import audit_record
from jitportal.errors import DomainError, NotFound, StateConflict

MFA_FRESHNESS = timedelta(minutes=15)
# A verification recorded by another web server whose clock runs a little ahead still counts.
CLOCK_SKEW = timedelta(seconds=60)
# Guessing six digits: as the password lockout, 5 failures in 15 minutes lock for 15 minutes.
TOTP_FAILURE_LIMIT = 5
TOTP_FAILURE_WINDOW = timedelta(minutes=15)
TOTP_LOCK = timedelta(minutes=15)
# One step either side of now: a phone clock off by up to 30 seconds still works.
TOTP_DRIFT_STEPS = 1
TOTP_ISSUER = "jitportal"

_SESSION_AT = "mfa_verified_at"
_SESSION_USER = "mfa_user"


class MfaRefused(DomainError):
    """A code or passkey that does not verify: wrong, replayed, or from an unknown credential."""

    status_code = 400
    code = "mfa_invalid"


class MfaThrottled(DomainError):
    status_code = 429
    code = "mfa_throttled"


class MfaRequired(DomainError):
    """A second factor verified in the last 15 minutes is needed and there is none."""

    status_code = 403
    code = "mfa_required"


# --- freshness ------------------------------------------------------------------------


def mfa_fresh(verified_at: datetime | None, *, at: datetime) -> bool:
    """Whether a second factor verified at ``verified_at`` still counts at ``at`` (15 minutes)."""
    return verified_at is not None and at - MFA_FRESHNESS <= verified_at <= at + CLOCK_SKEW


def mfa_session_mark(request, *, at: datetime) -> None:
    request.session[_SESSION_AT] = at.isoformat()
    request.session[_SESSION_USER] = request.user.pk


def mfa_session_verified_at(request) -> datetime | None:
    """When this session last verified a second factor of its signed-in user, or None.

    The API tokens page passes it to ``token_create(mfa_verified_at=...)``.
    """
    session = getattr(request, "session", None)
    user = getattr(request, "user", None)
    if session is None or user is None or not user.is_authenticated:
        return None
    raw = session.get(_SESSION_AT)
    if not raw or session.get(_SESSION_USER) != user.pk:
        return None
    try:
        return datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        return None


def mfa_request_verified_at(request) -> datetime | None:
    """The verification an API call carries: its token's when made with one, else its session's."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiToken):
        return auth.mfa_verified_at
    return mfa_session_verified_at(request)


@dataclass(frozen=True)
class Factors:
    totp: TotpDevice | None
    passkeys: list[WebAuthnCredential]

    @property
    def any(self) -> bool:
        return self.totp is not None or bool(self.passkeys)


def mfa_factors(*, user) -> Factors:
    """The confirmed second factors of ``user`` (a TOTP device being set up is not one)."""
    totp = TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).first()
    return Factors(totp=totp, passkeys=list(WebAuthnCredential.objects.filter(user=user)))


def mfa_enrolled(user) -> bool:
    return (
        TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).exists()
        or WebAuthnCredential.objects.filter(user=user).exists()
    )


def _require_fresh_if_enrolled(user, verified_at: datetime | None, *, at: datetime) -> None:
    # Adding a factor next to an existing one proves the existing one first, so
    # a stolen session cannot enrol the thief's own authenticator.
    if mfa_enrolled(user) and not mfa_fresh(verified_at, at=at):
        raise MfaRequired("adding a second factor next to the one you have needs a fresh verification with it")


def _audit(action: str, user, **data) -> None:
    audit_record(action=action, actor=user, target_type="user", target_id=str(user.pk), data=data)


# --- TOTP -----------------------------------------------------------------------------


def totp_begin(*, user, verified_at: datetime | None) -> tuple[TotpDevice, str]:
    """A new unconfirmed TOTP device for ``user`` and its ``otpauth://`` URI (to show once).

    Starting again replaces a device not yet confirmed; a confirmed one must
    be removed first (409), so a stolen session cannot swap the factor quietly.
    """
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).get()
        _require_fresh_if_enrolled(user, verified_at, at=timezone.now())
        existing = TotpDevice.objects.filter(user=user).first()
        if existing is not None and existing.confirmed:
            raise StateConflict("a TOTP authenticator is already set up; remove it first", code="mfa_enrolled")
        secret = pyotp.random_base32()
        if existing is None:
            device = TotpDevice.objects.create(user=user, secret=secret)
        else:
            existing.secret = secret
            existing.last_step = None
            existing.save(update_fields=["secret", "last_step"])
            device = existing
    return device, _provisioning_uri(user, secret)


def _provisioning_uri(user, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.get_username(), issuer_name=TOTP_ISSUER)


def totp_pending_uri(*, user) -> str | None:
    """The ``otpauth://`` URI of the device being set up (so a mistyped code need not mean a new scan), or None."""
    device = TotpDevice.objects.filter(user=user, confirmed_at__isnull=True).first()
    return None if device is None else _provisioning_uri(user, device.secret)


def _matching_step(secret: str, code: str, *, at: datetime) -> int | None:
    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    now_step = totp.timecode(at)
    for step in range(now_step - TOTP_DRIFT_STEPS, now_step + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _totp_use(*, user, code: str, confirming: bool, verified_at: datetime | None = None) -> datetime:
    """Check ``code`` against the locked device and record the outcome; the time it verified.

    A failure is recorded (counted, audited ``auth.mfa_failed``) and committed
    before the refusal is raised, so refusing does not roll back the count.
    """
    refusal: DomainError | None = None
    with transaction.atomic():
        device = TotpDevice.objects.select_for_update().filter(user=user).first()
        at = timezone.now()
        if device is None or device.confirmed == confirming:
            what = "no TOTP authenticator is being set up" if confirming else "no TOTP authenticator is set up"
            raise NotFound(what, code="mfa_not_enrolled")
        if confirming:
            _require_fresh_if_enrolled(user, verified_at, at=at)
        if device.locked_until is not None and device.locked_until > at:
            minutes = max(1, round((device.locked_until - at).total_seconds() / 60))
            refusal = MfaThrottled(f"Too many wrong codes. Try again in {minutes} minutes.", field="code")
            _audit("auth.mfa_failed", user, method="totp", reason="throttled")
        else:
            step = _matching_step(device.secret, code, at=at)
            if step is None or (device.last_step is not None and step <= device.last_step):
                reason = "wrong" if step is None else "replayed"
                message = "that code is not right" if step is None else "that code was already used; wait for the next"
                refusal = MfaRefused(message, field="code")
                if device.first_failure_at is None or at - device.first_failure_at > TOTP_FAILURE_WINDOW:
                    device.failures, device.first_failure_at = 0, at
                device.failures += 1
                locked = device.failures >= TOTP_FAILURE_LIMIT
                if locked:
                    device.locked_until = at + TOTP_LOCK
                    device.failures, device.first_failure_at = 0, None
                device.save(update_fields=["failures", "first_failure_at", "locked_until"])
                _audit("auth.mfa_failed", user, method="totp", reason=reason, locked=locked)
            else:
                device.last_step = step
                device.failures, device.first_failure_at, device.locked_until = 0, None, None
                fields = ["last_step", "failures", "first_failure_at", "locked_until"]
                if confirming:
                    device.confirmed_at = at
                    fields.append("confirmed_at")
                    _audit("auth.mfa_enrolled", user, method="totp")
                device.save(update_fields=fields)
                _audit("auth.mfa_verified", user, method="totp")
    if refusal is not None:
        raise refusal
    return at


def totp_confirm(*, user, code: str, verified_at: datetime | None) -> datetime:
    """Confirm the device being set up with a code from it; from then on it counts. Audited.

    With a passkey already registered, ``verified_at`` must be fresh, as when the setup began.
    """
    return _totp_use(user=user, code=code, confirming=True, verified_at=verified_at)


def totp_verify(*, user, code: str) -> datetime:
    """Verify a code of the confirmed device: wrong, replayed or throttled codes are refused and audited."""
    return _totp_use(user=user, code=code, confirming=False)


# --- WebAuthn -------------------------------------------------------------------------


def _user_handle(user) -> bytes:
    # Stable and opaque: the primary key, not the username (which an identity provider may rename).
    return f"jitportal-user-{user.pk}".encode()


def webauthn_registration_options(*, user, rp_id: str, rp_name: str, verified_at: datetime | None) -> tuple[str, bytes]:
    """Options for ``navigator.credentials.create`` (JSON) and the challenge to keep for the answer."""
    _require_fresh_if_enrolled(user, verified_at, at=timezone.now())
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_id=_user_handle(user),
        user_name=user.get_username(),
        user_display_name=user.get_full_name() or user.get_username(),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(cid))
            for cid in WebAuthnCredential.objects.filter(user=user).values_list("credential_id", flat=True)
        ],
    )
    return options_to_json(options), bytes_to_base64url(options.challenge)


def webauthn_register(
    *,
    user,
    credential: dict,
    challenge: str,
    rp_id: str,
    origin: str,
    name: str = "",
    verified_at: datetime | None,
) -> WebAuthnCredential:
    """Verify a registration answer against ``challenge`` and keep the credential; audited."""
    _require_fresh_if_enrolled(user, verified_at, at=timezone.now())
    try:
        verified = verify_registration_response(
            credential=json.dumps(credential),
            expected_challenge=base64url_to_bytes(challenge),
            expected_rp_id=rp_id,
            expected_origin=origin,
        )
    except (InvalidRegistrationResponse, ValueError, KeyError, TypeError) as exc:
        with transaction.atomic():
            _audit("auth.mfa_failed", user, method="webauthn", reason="registration refused")
        raise MfaRefused(f"the passkey was not accepted: {exc}", field="credential") from None
    credential_id = bytes_to_base64url(verified.credential_id)
    response = credential.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    transports = transports if isinstance(transports, list) else []
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).get()
        if WebAuthnCredential.objects.filter(credential_id=credential_id).exists():
            raise StateConflict("this passkey is already registered", code="mfa_enrolled")
        stored = WebAuthnCredential.objects.create(
            user=user,
            name=(name or "passkey")[:100],
            credential_id=credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=[t for t in transports if isinstance(t, str)][:8],
        )
        _audit("auth.mfa_enrolled", user, method="webauthn", credential=stored.pk, name=stored.name)
    return stored


def webauthn_authentication_options(*, user, rp_id: str) -> tuple[str, str]:
    """Options for ``navigator.credentials.get`` naming ``user``'s passkeys, and the challenge to keep."""
    options = generate_authentication_options(
        rp_id=rp_id,
        allow_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(cid))
            for cid in WebAuthnCredential.objects.filter(user=user).values_list("credential_id", flat=True)
        ],
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return options_to_json(options), bytes_to_base64url(options.challenge)


def webauthn_verify(*, user, credential: dict, challenge: str, rp_id: str, origin: str) -> datetime:
    """Verify an authentication answer by one of ``user``'s passkeys; the time it verified.

    The stored signature counter must grow (when the authenticator keeps
    one): a counter that does not is a cloned key, refused and audited.
    """
    refusal: MfaRefused | None = None
    with transaction.atomic():
        raw_id = credential.get("id") if isinstance(credential, dict) else None
        stored = (
            WebAuthnCredential.objects.select_for_update().filter(user=user, credential_id=raw_id).first()
            if isinstance(raw_id, str)
            else None
        )
        at = timezone.now()
        if stored is None:
            refusal = MfaRefused("this passkey is not registered to you", field="credential")
            _audit("auth.mfa_failed", user, method="webauthn", reason="unknown credential")
        else:
            try:
                verified = verify_authentication_response(
                    credential=json.dumps(credential),
                    expected_challenge=base64url_to_bytes(challenge),
                    expected_rp_id=rp_id,
                    expected_origin=origin,
                    credential_public_key=bytes(stored.public_key),
                    credential_current_sign_count=stored.sign_count,
                )
            except (InvalidAuthenticationResponse, ValueError, KeyError, TypeError) as exc:
                refusal = MfaRefused(f"the passkey was not accepted: {exc}", field="credential")
                _audit("auth.mfa_failed", user, method="webauthn", reason=str(exc)[:200], credential=stored.pk)
            else:
                stored.sign_count = verified.new_sign_count
                stored.last_used_at = at
                stored.save(update_fields=["sign_count", "last_used_at"])
                _audit("auth.mfa_verified", user, method="webauthn", credential=stored.pk)
    if refusal is not None:
        raise refusal
    return at


# --- removal --------------------------------------------------------------------------


def mfa_factor_remove(*, user, kind: str, pk: int | None = None, verified_at: datetime | None) -> None:
    """Remove one of ``user``'s factors; needs a second factor verified in the last 15 minutes. Audited."""
    if kind not in ("totp", "webauthn"):
        raise DomainError("must be 'totp' or 'webauthn'", field="kind")
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).get()
        at = timezone.now()
        if not mfa_fresh(verified_at, at=at):
            raise MfaRequired("removing a second factor needs a fresh verification")
        if kind == "totp":
            deleted, _ = TotpDevice.objects.filter(user=user).delete()
        else:
            deleted, _ = WebAuthnCredential.objects.filter(user=user, pk=pk).delete()
        if not deleted:
            raise NotFound("no such factor", field="kind")
        _audit("auth.mfa_removed", user, method=kind, credential=pk)


def mfa_factors_reset(*, users, by) -> int:
    """Remove every second factor of ``users`` (a lost phone or key), as an administrator; how many users had one.

    One ``auth.mfa_removed`` event per user whose factors went, naming who
    reset them; the users enrol again on their next visit to the Security page.
    """
    pks = [user.pk for user in users]
    with transaction.atomic():
        locked = list(User.objects.select_for_update().filter(pk__in=pks).order_by("pk"))
        had = set(TotpDevice.objects.filter(user__in=locked).values_list("user_id", flat=True))
        had |= set(WebAuthnCredential.objects.filter(user__in=locked).values_list("user_id", flat=True))
        TotpDevice.objects.filter(user__in=locked).delete()
        WebAuthnCredential.objects.filter(user__in=locked).delete()
        for user in locked:
            if user.pk in had:
                audit_record(
                    action="auth.mfa_removed",
                    actor=by,
                    target_type="user",
                    target_id=str(user.pk),
                    data={"method": "all", "user": user.get_username(), "reset": True},
                )
    return len(had)


def staff_mfa_redirect(request) -> str | None:
    """Where a staff member or superuser goes before the admin when ``JITPORTAL_REQUIRE_MFA_FOR_STAFF`` is on.

    None when the switch is off, the user is not staff, or this session has
    verified a second factor (at any time: the session's own lifetime bounds it).
    The verification page sends someone without a factor to enrol one first.
    """
    user = request.user
    if not settings.JITPORTAL_REQUIRE_MFA_FOR_STAFF or not user.is_authenticated:
        return None
    if not (user.is_staff or user.is_superuser) or mfa_session_verified_at(request) is not None:
        return None
    return f"{reverse('mfa-verify')}?{urlencode({'next': request.get_full_path()})}"
