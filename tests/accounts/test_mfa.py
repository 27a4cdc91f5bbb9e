"""Second factors: TOTP with computed codes, the pages, removal, the staff switch, tokens' MFA standing."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts import mfa
from accounts.models import ApiToken, TotpDevice, WebAuthnCredential
from accounts.services import token_create
from audit.models import AuditEvent
from tests.requests_app.portal import grant_review_permission

pytestmark = pytest.mark.django_db

SECURITY = reverse("mfa-security")
VERIFY = reverse("mfa-verify")
SETUP = reverse("mfa-totp-setup")
REMOVE = reverse("mfa-remove")


def enrolled(user) -> pyotp.TOTP:
    """``user`` with a confirmed TOTP device, through the services; its TOTP for computing codes."""
    device, _uri = mfa.totp_begin(user=user, verified_at=None)
    totp = pyotp.TOTP(device.secret)
    # A code of the previous step confirms, so the current one is still unused for the test.
    mfa.totp_confirm(user=user, code=totp.at(timezone.now() - timedelta(seconds=30)), verified_at=None)
    return totp


def failures(user) -> list[dict]:
    return list(
        AuditEvent.objects.filter(action="auth.mfa_failed", target_id=str(user.pk))
        .order_by("id")
        .values_list("data", flat=True)
    )


# --- TOTP -------------------------------------------------------------------------------------


def test_the_secret_is_encrypted_at_rest_and_the_uri_names_it(requester):
    device, uri = mfa.totp_begin(user=requester, verified_at=None)
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM accounts_totpdevice WHERE id = %s", [device.pk])
        stored = cursor.fetchone()[0]
    assert device.secret not in stored and stored.startswith("gAAAA")  # a Fernet token
    assert parse_qs(urlsplit(uri).query)["secret"] == [device.secret]
    assert uri.startswith("otpauth://totp/jitportal:alice?")


def test_an_unconfirmed_device_is_no_factor_until_a_code_confirms_it(requester):
    device, _ = mfa.totp_begin(user=requester, verified_at=None)
    assert not mfa.mfa_enrolled(requester)
    wrong = f"{(int(pyotp.TOTP(device.secret).now()) + 5) % 1_000_000:06d}"
    with pytest.raises(mfa.MfaRefused, match="not right"):
        mfa.totp_confirm(user=requester, code=wrong, verified_at=None)
    assert not mfa.mfa_enrolled(requester)
    mfa.totp_confirm(user=requester, code=pyotp.TOTP(device.secret).now(), verified_at=None)
    assert mfa.mfa_enrolled(requester)
    assert AuditEvent.objects.filter(action="auth.mfa_enrolled", data__method="totp").count() == 1


def test_a_good_code_verifies_and_is_audited(requester):
    totp = enrolled(requester)
    at = mfa.totp_verify(user=requester, code=totp.now())
    assert abs((timezone.now() - at).total_seconds()) < 5
    assert AuditEvent.objects.filter(action="auth.mfa_verified", target_id=str(requester.pk)).count() == 2


def test_a_wrong_code_is_refused_and_audited(requester):
    totp = enrolled(requester)
    wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    with pytest.raises(mfa.MfaRefused) as refused:
        mfa.totp_verify(user=requester, code=wrong)
    assert refused.value.code == "mfa_invalid" and refused.value.field == "code"
    assert [f["reason"] for f in failures(requester)] == ["wrong"]


def test_a_replayed_code_is_refused_and_audited(requester):
    totp = enrolled(requester)
    code = totp.now()
    mfa.totp_verify(user=requester, code=code)
    with pytest.raises(mfa.MfaRefused, match="already used"):
        mfa.totp_verify(user=requester, code=code)
    assert [f["reason"] for f in failures(requester)] == ["replayed"]


def test_an_older_step_than_the_last_used_one_is_a_replay(requester):
    totp = enrolled(requester)  # confirmed with the previous step's code
    mfa.totp_verify(user=requester, code=totp.now())
    older = totp.at(timezone.now() - timedelta(seconds=30))
    with pytest.raises(mfa.MfaRefused, match="already used"):
        mfa.totp_verify(user=requester, code=older)


def test_a_code_outside_the_drift_window_is_refused(requester):
    totp = enrolled(requester)
    stale = totp.at(timezone.now() - timedelta(seconds=95))  # three steps ago
    future = totp.at(timezone.now() + timedelta(seconds=95))
    for code in (stale, future):
        if code == totp.now():
            continue  # one chance in a million: the same digits
        with pytest.raises(mfa.MfaRefused, match="not right"):
            mfa.totp_verify(user=requester, code=code)
    # The next step's code (a fast clock) is still accepted.
    mfa.totp_verify(user=requester, code=totp.at(timezone.now() + timedelta(seconds=30)))


def test_guessing_is_throttled_after_five_failures_even_for_a_right_code(requester):
    totp = enrolled(requester)
    wrong = f"{(int(totp.now()) + 7) % 1_000_000:06d}"
    for _ in range(mfa.TOTP_FAILURE_LIMIT):
        with pytest.raises(mfa.MfaRefused):
            mfa.totp_verify(user=requester, code=wrong)
    with pytest.raises(mfa.MfaThrottled) as throttled:
        mfa.totp_verify(user=requester, code=totp.now())
    assert throttled.value.status_code == 429
    reasons = [f["reason"] for f in failures(requester)]
    assert reasons == ["wrong"] * 5 + ["throttled"]
    assert failures(requester)[4]["locked"] is True
    # Once the lock has passed, a right code works again.
    TotpDevice.objects.filter(user=requester).update(locked_until=timezone.now() - timedelta(seconds=1))
    mfa.totp_verify(user=requester, code=totp.now())


def test_setting_up_again_replaces_an_unconfirmed_secret_but_not_a_confirmed_one(requester):
    first, _ = mfa.totp_begin(user=requester, verified_at=None)
    second, _ = mfa.totp_begin(user=requester, verified_at=None)
    assert first.pk == second.pk and first.secret != TotpDevice.objects.get().secret
    mfa.totp_confirm(user=requester, code=pyotp.TOTP(TotpDevice.objects.get().secret).now(), verified_at=None)
    with pytest.raises(mfa.StateConflict):
        mfa.totp_begin(user=requester, verified_at=timezone.now())


# --- freshness and tokens ---------------------------------------------------------------------


def test_fresh_means_verified_in_the_last_fifteen_minutes():
    now = timezone.now()
    assert mfa.mfa_fresh(now - timedelta(minutes=14, seconds=59), at=now)
    assert not mfa.mfa_fresh(now - timedelta(minutes=15, seconds=1), at=now)
    assert not mfa.mfa_fresh(None, at=now)
    assert mfa.mfa_fresh(now + timedelta(seconds=30), at=now)  # another server's clock, a little ahead
    assert not mfa.mfa_fresh(now + timedelta(minutes=2), at=now)


def test_a_token_carries_the_verification_of_the_session_that_made_it(requester):
    verified = timezone.now() - timedelta(minutes=3)
    token, _secret = token_create(user=requester, name="laptop", mfa_verified_at=verified, by=requester)
    assert ApiToken.objects.get(pk=token.pk).mfa_verified_at == verified
    event = AuditEvent.objects.get(action="token.created")
    assert event.data["mfa_verified_at"] == verified.isoformat()
    plain, _ = token_create(user=requester, by=requester)
    assert plain.mfa_verified_at is None


# --- pages ------------------------------------------------------------------------------------


def test_enrol_on_the_page_shows_the_secret_once_and_a_code_confirms_it(client, requester):
    client.force_login(requester)
    page = client.get(f"{SETUP}?next=/requests/")
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    secret = TotpDevice.objects.get(user=requester).secret
    assert secret in page.content.decode() and "<svg" in page.content.decode()
    done = client.post(SETUP, {"code": pyotp.TOTP(secret).now(), "next": "/requests/"})
    assert done.status_code == 302 and done["Location"] == "/requests/"
    assert mfa.mfa_enrolled(requester)
    # Confirming counts as a verification of this session, and the secret is never shown again.
    assert mfa.mfa_fresh(datetime.fromisoformat(client.session["mfa_verified_at"]), at=timezone.now())
    assert secret not in client.get(SECURITY).content.decode()


def test_a_mistyped_code_while_setting_up_shows_the_same_secret_again(client, requester):
    client.force_login(requester)
    client.get(SETUP)
    secret = TotpDevice.objects.get(user=requester).secret
    wrong = f"{(int(pyotp.TOTP(secret).now()) + 2) % 1_000_000:06d}"
    again = client.post(SETUP, {"code": wrong})
    assert again.status_code == 400 and "not right" in again.content.decode()
    assert secret in again.content.decode() and TotpDevice.objects.get(user=requester).secret == secret
    assert not mfa.mfa_enrolled(requester)
    assert [f["reason"] for f in failures(requester)] == ["wrong"]


def test_verify_page_marks_the_session_and_returns_to_next(client, requester):
    totp = enrolled(requester)
    client.force_login(requester)
    page = client.get(f"{VERIFY}?next=/requests/")
    assert page.status_code == 200 and 'name="code"' in page.content.decode()
    done = client.post(VERIFY, {"code": totp.now(), "next": "/requests/"})
    assert done.status_code == 302 and done["Location"] == "/requests/"
    assert client.session["mfa_user"] == requester.pk


def test_verify_page_refuses_a_wrong_code_and_never_redirects_off_site(client, requester):
    totp = enrolled(requester)
    client.force_login(requester)
    wrong = f"{(int(totp.now()) + 3) % 1_000_000:06d}"
    refused = client.post(VERIFY, {"code": wrong, "next": "/"})
    assert refused.status_code == 400 and "not right" in refused.content.decode()
    assert "mfa_verified_at" not in client.session
    done = client.post(VERIFY, {"code": totp.now(), "next": "https://evil.example/"})
    assert done["Location"] == SECURITY


def test_verify_without_a_factor_sends_to_enrolment_keeping_next(client, requester):
    client.force_login(requester)
    response = client.get(f"{VERIFY}?next=/admin/")
    assert response.status_code == 302
    assert response["Location"] == f"{SECURITY}?next=%2Fadmin%2F"


def test_a_verification_belongs_to_the_user_who_made_it(client, requester, reviewer):
    totp = enrolled(requester)
    client.force_login(requester)
    client.post(VERIFY, {"code": totp.now(), "next": "/"})
    session = client.session
    session["_auth_user_id"] = str(reviewer.pk)  # the same session, now someone else's
    session.save()

    class Request:
        pass

    request = Request()
    request.session, request.user = client.session, reviewer
    assert mfa.mfa_session_verified_at(request) is None


def test_removing_a_factor_needs_a_fresh_verification(client, requester):
    totp = enrolled(requester)
    client.force_login(requester)
    stale = client.post(REMOVE, {"kind": "totp"})
    assert stale.status_code == 302 and stale["Location"].startswith(VERIFY)
    assert mfa.mfa_enrolled(requester)
    client.post(VERIFY, {"code": totp.now(), "next": SECURITY})
    removed = client.post(REMOVE, {"kind": "totp"})
    assert removed["Location"] == SECURITY
    assert not mfa.mfa_enrolled(requester)
    assert AuditEvent.objects.filter(action="auth.mfa_removed", data__method="totp").count() == 1


def test_a_verification_older_than_fifteen_minutes_does_not_remove(requester):
    enrolled(requester)
    with pytest.raises(mfa.MfaRequired):
        mfa.mfa_factor_remove(user=requester, kind="totp", verified_at=timezone.now() - timedelta(minutes=16))
    assert mfa.mfa_enrolled(requester)


def test_a_second_factor_is_added_only_after_verifying_the_first(requester):
    enrolled(requester)
    with pytest.raises(mfa.MfaRequired):
        mfa.webauthn_registration_options(user=requester, rp_id="localhost", rp_name="jitportal", verified_at=None)
    options, challenge = mfa.webauthn_registration_options(
        user=requester, rp_id="localhost", rp_name="jitportal", verified_at=timezone.now()
    )
    assert len(challenge) >= 22 and '"rp": {"name": "jitportal", "id": "localhost"}' in options


def test_an_app_set_up_beside_a_passkey_is_confirmed_only_after_verifying_the_passkey(requester):
    device, _ = mfa.totp_begin(user=requester, verified_at=None)
    # A passkey registered meanwhile (e.g. in another tab): the app now joins an existing factor.
    WebAuthnCredential.objects.create(user=requester, name="key", credential_id="abc", public_key=b"k")
    code = pyotp.TOTP(device.secret).now()
    with pytest.raises(mfa.MfaRequired):
        mfa.totp_confirm(user=requester, code=code, verified_at=None)
    assert TotpDevice.objects.get(user=requester).confirmed_at is None
    mfa.totp_confirm(user=requester, code=code, verified_at=timezone.now())
    assert TotpDevice.objects.get(user=requester).confirmed


def test_a_passkey_answer_without_a_ceremony_is_refused(client, requester):
    client.force_login(requester)
    response = client.post(reverse("mfa-webauthn-verify"), {"credential": {"id": "x"}}, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "mfa_invalid"


# --- staff ------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["staff", "superuser"])
def test_staff_must_verify_before_the_admin_when_switched_on(client, settings, who, request):
    user = request.getfixturevalue(who)
    client.force_login(user)
    settings.JITPORTAL_REQUIRE_MFA_FOR_STAFF = False
    assert client.get("/admin/").status_code == 200

    settings.JITPORTAL_REQUIRE_MFA_FOR_STAFF = True
    gated = client.get("/admin/accounts/role/")
    assert gated.status_code == 302 and gated["Location"] == f"{VERIFY}?next=%2Fadmin%2Faccounts%2Frole%2F"
    # Without a factor, the verification page sends them to enrol first.
    assert client.get(gated["Location"])["Location"].startswith(SECURITY)
    # Signing out stays possible.
    client.post("/admin/logout/")
    assert "_auth_user_id" not in client.session

    client.force_login(user)
    totp = enrolled(user)
    client.post(VERIFY, {"code": totp.now(), "next": "/admin/"})
    assert client.get("/admin/accounts/role/").status_code == 200


def test_the_staff_switch_leaves_reviewers_without_the_flag_alone(client, settings, reviewer, prod_ssh):
    settings.JITPORTAL_REQUIRE_MFA_FOR_STAFF = True
    client.force_login(grant_review_permission(reviewer))
    assert client.get("/admin/").status_code == 200


def test_a_superuser_resets_a_users_second_factors_audited(client, superuser, requester, reviewer):
    enrolled(requester)
    client.force_login(superuser)
    response = client.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "reset_second_factors", "_selected_action": [requester.pk, reviewer.pk]},
        follow=True,
    )
    assert "Removed the second factors of 1 user." in response.content.decode()
    assert not mfa.mfa_enrolled(requester)
    event = AuditEvent.objects.get(action="auth.mfa_removed")
    assert (event.actor_username, event.data["user"], event.data["reset"]) == ("root", "alice", True)
