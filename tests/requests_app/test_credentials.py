"""The SSH CA and the certificates it signs, proved through the credential services.

Certificates are read back the way a host would: with ``cryptography`` and
with ``ssh-keygen -L``.
"""

from __future__ import annotations

import io
import math
import re
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import ssh
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from jitportal.crypto import encrypted_fields_rotate
from jitportal.errors import DomainError, PermissionRefused, StateConflict
from requests_app.credentials import certificates
from requests_app.credentials import keys as keys_module
from requests_app.credentials.ca import ssh_ca_init, ssh_ca_rotate, ssh_ca_signing, ssh_cas_trusted
from requests_app.credentials.certificates import certificate_issue
from requests_app.credentials.hosts import MAX_PRINCIPALS, resource_ssh_principals, ssh_revoked_public_keys
from requests_app.credentials.keys import public_key_parse
from requests_app.models import Grant, IssuedCertificate, SSHCertificateAuthority, grant_refusal
from requests_app.services import access_check, grant_revoke, request_create, request_review
from tests.conftest import audit_sealed_verify, make_resource, make_role, make_user
from tests.ssh.keys import (
    dsa_public_line,
    ecdsa_key,
    ed25519_key,
    openssh_private,
    openssh_public,
    parse_certificate,
    rsa_key,
    ssh_keygen_list,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def web_ssh(db):
    """One approval, two logins, nodes with env=prod."""
    return make_role("web-ssh", approvals=1, logins=["ubuntu", "deploy"])


def granted(requester, reviewer, *, role, resources=None, **create) -> Grant:
    """An approved request for ``role`` (resource-based when ``resources``), its first grant."""
    create.setdefault("reason", "INC-1")
    access_request = request_create(requester=requester, roles=[role], resources=resources or [], **create)
    request_review(request=access_request, reviewer=reviewer, decision="approve")
    return access_request.grants.order_by("id").first()


def issue(grant: Grant, *, key=None, user=None, at=None) -> IssuedCertificate:
    key = key or ed25519_key()
    return certificate_issue(grant=grant, user=user or grant.user, public_key=openssh_public(key), at=at)


# --- what a certificate says ----------------------------------------------------------------


def test_certificate_is_a_user_certificate_scoped_to_the_grant_and_signed_by_the_ca(
    requester, reviewer, web_ssh, web1, web2
):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1, web2])
    key = ed25519_key()
    now = timezone.now()

    issued = issue(grant, key=key, at=now)

    cert = parse_certificate(issued.certificate)
    ca = SSHCertificateAuthority.objects.get()
    cert.verify_cert_signature()  # raises unless the signature checks out
    assert openssh_public_line(cert.signature_key()) == ca.public_key.rsplit(" ", 1)[0]
    assert openssh_public_line(cert.public_key()) == openssh_public(key)
    assert cert.type == ssh.SSHCertificateType.USER
    assert cert.valid_principals == [b"deploy@web-1", b"ubuntu@web-1"]
    assert cert.key_id == f"alice@jitportal request={grant.request_id} grant={grant.pk}".encode()
    assert cert.serial == issued.serial
    assert cert.valid_after == math.floor((now - timedelta(seconds=60)).timestamp())
    assert cert.valid_before == math.floor(grant.expires_at.timestamp())
    assert cert.critical_options == {}
    assert cert.extensions == {b"permit-pty": b""}
    assert issued.principals == ["deploy@web-1", "ubuntu@web-1"]
    assert issued.ca == ca and issued.grant == grant


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="ssh-keygen (openssh-client) is not installed")
def test_ssh_keygen_reads_the_certificate_back(requester, reviewer, web_ssh, web1, tmp_path):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    now = timezone.now()

    issued = issue(grant, at=now)

    listing = ssh_keygen_list(issued.certificate, tmp_path)
    ca = SSHCertificateAuthority.objects.get()
    assert "Type: ssh-ed25519-cert-v01@openssh.com user certificate" in listing
    assert f"Signing CA: ED25519 {ca.fingerprint}" in listing
    assert f'Key ID: "alice@jitportal request={grant.request_id} grant={grant.pk}"' in listing
    assert f"Serial: {issued.serial}" in listing
    after = datetime.fromtimestamp(math.floor(now.timestamp()) - 60, tz=UTC)
    before = datetime.fromtimestamp(math.floor(grant.expires_at.timestamp()), tz=UTC)
    assert f"Valid: from {after:%Y-%m-%dT%H:%M:%S} to {before:%Y-%m-%dT%H:%M:%S}" in listing
    principals = re.search(r"Principals: \n((?:\s{16}\S+\n)+)", listing).group(1).split()
    assert principals == ["deploy@web-1", "ubuntu@web-1"]
    assert re.search(r"Extensions: \n\s+permit-pty\n", listing)
    assert "Critical Options: (none)" in listing


def openssh_public_line(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_role_based_grant_names_every_node_the_role_matches(requester, reviewer, web_ssh, web1, web2, dev1, db1):
    grant = granted(requester, reviewer, role=web_ssh)

    issued = issue(grant)

    assert grant.resource is None
    assert issued.principals == ["deploy@web-1", "ubuntu@web-1", "deploy@web-2", "ubuntu@web-2"]
    assert parse_certificate(issued.certificate).valid_principals == [p.encode() for p in issued.principals]


def test_role_based_grant_over_the_principal_cap_is_refused_and_says_so(requester, reviewer, web_ssh):
    logins = 2
    hosts = MAX_PRINCIPALS // logins + 1
    for i in range(hosts):
        make_resource(f"n{i:03}", labels={"env": "prod"})
    grant = granted(requester, reviewer, role=web_ssh)

    with pytest.raises(DomainError) as exc:
        issue(grant)

    assert exc.value.status_code == 400
    assert f"{hosts} SSH servers × 2 logins = {hosts * logins} principals" in exc.value.message
    assert f"more than the {MAX_PRINCIPALS}" in exc.value.message
    assert not IssuedCertificate.objects.exists()


def test_a_database_grant_gets_no_ssh_certificate(requester, reviewer, db1):
    role = make_role("prod-db", approvals=1, resource_kinds=["db"], logins=["postgres"])
    grant = granted(requester, reviewer, role=role, resources=[db1])

    with pytest.raises(DomainError, match="db/orders is not an SSH server"):
        issue(grant)


def test_role_without_logins_gets_no_certificate(requester, reviewer, web1):
    role = make_role("no-logins", approvals=1, logins=[])
    grant = granted(requester, reviewer, role=role, resources=[web1])

    with pytest.raises(DomainError, match="allows no logins"):
        issue(grant)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, [b"permit-pty"]),
        ({"ssh_permit_pty": False}, []),
        (
            {"ssh_permit_port_forwarding": True, "ssh_permit_agent_forwarding": True},
            [b"permit-agent-forwarding", b"permit-port-forwarding", b"permit-pty"],
        ),
    ],
)
def test_extensions_follow_the_role_and_never_include_x11_or_user_rc(requester, reviewer, web1, flags, expected):
    role = make_role("flagged", approvals=1, **flags)
    grant = granted(requester, reviewer, role=role, resources=[web1])

    cert = parse_certificate(issue(grant).certificate)

    assert sorted(cert.extensions) == expected
    assert b"permit-X11-forwarding" not in cert.extensions and b"permit-user-rc" not in cert.extensions


# --- validity follows the grant -------------------------------------------------------------


def test_grant_ending_sooner_caps_valid_before(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1], duration="10m")

    issued = issue(grant)

    assert grant.expires_at - grant.starts_at == timedelta(minutes=10)
    assert parse_certificate(issued.certificate).valid_before == math.floor(grant.expires_at.timestamp())
    assert issued.valid_before <= grant.expires_at


def test_valid_before_is_rounded_down_never_past_the_grant(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    Grant.objects.filter(pk=grant.pk).update(expires_at=grant.expires_at.replace(microsecond=999_999))
    grant.refresh_from_db()

    cert = parse_certificate(issue(grant).certificate)

    assert cert.valid_before == math.floor(grant.expires_at.timestamp())
    assert datetime.fromtimestamp(cert.valid_before, tz=UTC) < grant.expires_at


@pytest.mark.parametrize("state", ["revoked", "expired", "scheduled"])
def test_inactive_grants_get_no_certificate(requester, reviewer, revoker, web_ssh, web1, state):
    start = timezone.now() + timedelta(hours=2) if state == "scheduled" else None
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1], start_time=start)
    at = None
    if state == "revoked":
        grant_revoke(grant=grant, by=revoker, reason="incident over")
        grant.refresh_from_db()
    elif state == "expired":
        at = grant.expires_at

    with pytest.raises(StateConflict) as exc:
        issue(grant, at=at)

    assert exc.value.status_code == 409
    assert {"revoked": "was revoked", "expired": "ended at", "scheduled": "starts at"}[state] in exc.value.message
    assert not IssuedCertificate.objects.exists()
    assert not AuditEvent.objects.filter(action="certificate.issued").exists()


def test_someone_elses_grant_gets_no_certificate(requester, reviewer, outsider, staff, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])

    for other in (outsider, staff, reviewer):
        with pytest.raises(PermissionRefused, match="only the grant's owner"):
            issue(grant, user=other)

    assert not IssuedCertificate.objects.exists()


def test_owner_no_longer_eligible_gets_no_certificate(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    requester.groups.remove(Group.objects.get(name="engineers"))

    with pytest.raises(PermissionRefused, match="no longer eligible for role web-ssh"):
        issue(grant)


def test_resource_no_longer_matched_by_the_role_gets_no_certificate(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    make_resource("web-1", labels={"env": "dev"}, address=web1.address)

    with pytest.raises(PermissionRefused, match="no longer grants access to node/web-1"):
        issue(grant)


# --- public keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: openssh_public(ed25519_key()) + " alice@laptop",
        lambda: openssh_public(ecdsa_key(ec.SECP256R1())),
        lambda: openssh_public(ecdsa_key(ec.SECP384R1())),
        lambda: openssh_public(ecdsa_key(ec.SECP521R1())),
        lambda: openssh_public(rsa_key(3072)),
    ],
    ids=["ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-3072"],
)
def test_accepted_public_keys(requester, reviewer, web_ssh, web1, make):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    line = make()

    issued = certificate_issue(grant=grant, user=requester, public_key=f"  {line}\n")

    cert = parse_certificate(issued.certificate)
    assert openssh_public_line(cert.public_key()) == " ".join(line.split()[:2])
    # Stored without the comment: a comment is the user's, not part of the key.
    assert issued.public_key == " ".join(line.split()[:2])
    assert issued.public_key_fingerprint == public_key_parse(line).fingerprint


def test_a_key_sent_again_is_parsed_once_and_a_refused_one_is_refused_every_time():
    line = openssh_public(ed25519_key())

    first = public_key_parse(f"{line} alice@laptop")

    assert public_key_parse(f"  {line} alice@laptop\n") is first
    assert first.line == line
    short = openssh_public(rsa_key(2048))
    for _ in range(2):
        with pytest.raises(DomainError, match="at least 3072 bits"):
            public_key_parse(short)


BAD_KEYS = {
    "rsa 2048": (lambda: openssh_public(rsa_key(2048)), "rsa keys must have at least 3072 bits; this one has 2048"),
    "dsa": (dsa_public_line, "ssh-dss keys are not accepted"),
    "garbage": (lambda: "ssh-ed25519 not-base64!!", "is not an OpenSSH public key"),
    "random text": (lambda: "hello world", "is not an OpenSSH public key"),
    "empty": (lambda: "   ", "send an OpenSSH public key"),
    "private key pasted": (lambda: openssh_private(ed25519_key()), "this is a private key"),
    "two keys": (lambda: openssh_public(ed25519_key()) + "\n" + openssh_public(ed25519_key()), "exactly one"),
    "not text": (lambda: 42, "send an OpenSSH public key"),
}


@pytest.mark.parametrize("case", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_bad_public_keys_are_refused_naming_public_key(requester, reviewer, web_ssh, web1, case):
    make, message = case
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])

    with pytest.raises(DomainError) as exc:
        certificate_issue(grant=grant, user=requester, public_key=make())

    assert exc.value.field == "public_key"
    assert exc.value.status_code == 400
    assert message in exc.value.message
    assert not IssuedCertificate.objects.exists()


def test_a_certificate_is_not_accepted_as_a_public_key(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    certificate = issue(grant).certificate

    with pytest.raises(DomainError, match="this is a certificate"):
        certificate_issue(grant=grant, user=requester, public_key=certificate)


# --- serials and the audit log --------------------------------------------------------------------


def test_serials_are_random_63_bit_and_unique(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])

    serials = [issue(grant).serial for _ in range(20)]

    assert len(set(serials)) == 20
    assert all(0 < s < 2**63 for s in serials)
    # Random, not a counter: 20 consecutive draws below 2**40 would be a one-in-2**460 event.
    assert max(serials) > 2**40


def test_a_serial_already_used_is_drawn_again_and_only_the_issued_certificate_is_audited(
    requester, reviewer, web_ssh, web1, monkeypatch
):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    taken = issue(grant).serial
    # The randomness is steered so the first draw repeats a serial; the unique constraint must catch it.
    draws = iter([taken, taken + 1])
    monkeypatch.setattr(certificates, "_serial_new", lambda: next(draws))

    issued = issue(grant)

    assert issued.serial == taken + 1
    assert IssuedCertificate.objects.filter(grant=grant).count() == 2
    assert ssh.load_ssh_public_identity(issued.certificate.encode()).serial == taken + 1
    audited = [e.data["serial"] for e in AuditEvent.objects.filter(action="certificate.issued").order_by("id")]
    assert audited == [taken, taken + 1]


def _between_the_read_and_the_write(monkeypatch, change) -> None:
    """Run ``change`` once, after the issue has decided and while it signs, before it writes."""
    sign = certificates.certificate_sign
    pending = [change]

    def signing(**kwargs):
        if pending:
            pending.pop()()
        return sign(**kwargs)

    monkeypatch.setattr(certificates, "certificate_sign", signing)


def _issued_events() -> int:
    return AuditEvent.objects.filter(action="certificate.issued").count()


def test_a_revocation_between_deciding_and_writing_leaves_no_certificate(
    requester, reviewer, revoker, web_ssh, web1, monkeypatch
):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    _between_the_read_and_the_write(monkeypatch, lambda: grant_revoke(grant=grant, by=revoker, reason="INC-9"))

    with pytest.raises(StateConflict, match="revoked") as refused:
        issue(grant)

    assert refused.value.code == "grant_not_active"
    assert not IssuedCertificate.objects.exists()
    assert _issued_events() == 0


def test_losing_eligibility_or_the_account_between_deciding_and_writing_leaves_no_certificate(
    requester, reviewer, web_ssh, web1, monkeypatch
):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    _between_the_read_and_the_write(monkeypatch, lambda: requester.groups.remove(Group.objects.get(name="engineers")))
    with pytest.raises(PermissionRefused, match="no longer eligible"):
        issue(grant)

    requester.groups.add(Group.objects.get(name="engineers"))
    # Deactivated through another copy of the user: the caller's copy still says active.
    _between_the_read_and_the_write(
        monkeypatch, lambda: type(requester).objects.filter(pk=requester.pk).update(is_active=False)
    )
    with pytest.raises(PermissionRefused, match="not active"):
        issue(grant, user=requester)

    assert not IssuedCertificate.objects.exists()
    assert _issued_events() == 0


def test_a_rotation_between_deciding_and_writing_gets_a_certificate_from_the_new_ca(
    requester, reviewer, web_ssh, web1, monkeypatch
):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    old = ssh_ca_signing()
    rotated = []
    _between_the_read_and_the_write(monkeypatch, lambda: rotated.append(ssh_ca_rotate(trust_old_for=timedelta(0)).new))

    issued = issue(grant)

    assert IssuedCertificate.objects.get().ca_id == issued.ca_id == rotated[0].pk != old.pk
    assert _signer(issued) == rotated[0].public_key.rsplit(" ", 1)[0]
    assert _issued_events() == 1


def test_every_issuance_is_audited_with_serial_principals_and_fingerprint(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    key = ed25519_key()

    issued = issue(grant, key=key)

    event = AuditEvent.objects.get(action="certificate.issued")
    assert event.actor_username == "alice"
    assert (event.target_type, event.target_id) == ("grant", str(grant.pk))
    assert event.data["serial"] == issued.serial
    assert event.data["principals"] == ["deploy@web-1", "ubuntu@web-1"]
    assert event.data["fingerprint"] == public_key_parse(openssh_public(key)).fingerprint
    assert event.data["fingerprint"].startswith("SHA256:")
    assert event.data["ca"] == SSHCertificateAuthority.objects.get().fingerprint
    assert audit_sealed_verify().ok


# --- the CA -------------------------------------------------------------------------------------------


def test_ca_is_created_on_first_use_once_and_its_private_key_is_encrypted_at_rest(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    assert not SSHCertificateAuthority.objects.exists()

    issue(grant)
    issue(grant)

    ca = SSHCertificateAuthority.objects.get()
    assert ca.private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT private_key FROM {SSHCertificateAuthority._meta.db_table}")
        (stored,) = cursor.fetchone()
    assert "PRIVATE KEY" not in stored and ca.private_key not in stored
    assert AuditEvent.objects.filter(action="ssh_ca.created").count() == 1


def test_ssh_ca_init_is_idempotent():
    first, created = ssh_ca_init()
    again, created_again = ssh_ca_init()

    assert created and not created_again
    assert first == again and SSHCertificateAuthority.objects.count() == 1


def test_rotation_keeps_both_trusted_and_the_new_one_signs(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    old_cert = issue(grant)
    old = SSHCertificateAuthority.objects.get()
    now = timezone.now()

    rotation = ssh_ca_rotate(trust_old_for=timedelta(days=7), at=now)

    new = rotation.new
    assert rotation.retired == [old]
    assert [ca.name for ca in ssh_cas_trusted()] == [new.name, old.name]
    old.refresh_from_db()
    assert old.retired_at == now and old.trusted_until == now + timedelta(days=7)
    assert ssh_ca_signing() == new
    new_cert = parse_certificate(issue(grant).certificate)
    assert openssh_public_line(new_cert.signature_key()) == new.public_key.rsplit(" ", 1)[0]
    assert old_cert.ca == old
    # The overlap outlives every certificate already out, so none is cut short.
    assert rotation.cut_short == 0
    assert AuditEvent.objects.filter(action="ssh_ca.rotated", target_id=str(new.pk)).exists()


def test_old_ca_stops_being_trusted_when_the_overlap_ends():
    old, _ = ssh_ca_init()
    now = timezone.now()
    ssh_ca_rotate(trust_old_for=timedelta(hours=1), at=now)

    assert old.name in [ca.name for ca in ssh_cas_trusted(at=now + timedelta(minutes=59))]
    assert old.name not in [ca.name for ca in ssh_cas_trusted(at=now + timedelta(hours=1))]


def test_rotation_with_no_overlap_drops_every_older_ca_and_counts_certificates_cut_short(
    requester, reviewer, web_ssh, web1
):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    issue(grant)
    first = SSHCertificateAuthority.objects.get()
    second = ssh_ca_rotate(trust_old_for=timedelta(days=7)).new

    rotation = ssh_ca_rotate(trust_old_for=timedelta(0))

    assert [ca.name for ca in ssh_cas_trusted()] == [rotation.new.name]
    assert {ca.name for ca in rotation.retired} == {first.name, second.name}
    assert rotation.cut_short == 1


def test_rotation_never_extends_an_older_cas_trust():
    first, _ = ssh_ca_init()
    now = timezone.now()
    ssh_ca_rotate(trust_old_for=timedelta(hours=1), at=now)

    ssh_ca_rotate(trust_old_for=timedelta(days=7), at=now + timedelta(minutes=1))

    first.refresh_from_db()
    assert first.trusted_until == now + timedelta(hours=1)


# --- host side: principals and revoked keys ------------------------------------------------------


def test_host_principals_are_the_logins_of_grants_honoured_on_that_host(requester, reviewer, web_ssh, web1, web2, dev1):
    prod_ops = make_role("prod-ops", logins=["root", "ubuntu"], approvals=1)
    dev_ssh = make_role("dev-ssh", resource_labels={"env": ["dev"]}, logins=["dev"], approvals=1)
    make_role("db-only", resource_kinds=["db"], resource_labels={}, logins=["postgres"])
    # Nobody holds anything yet: no host lists a principal.
    assert resource_ssh_principals(resource=web1) == []

    granted(requester, reviewer, role=web_ssh, resources=[web1])
    granted(requester, reviewer, role=prod_ops)  # role-based: every prod node
    granted(requester, reviewer, role=dev_ssh, resources=[dev1])

    assert resource_ssh_principals(resource=web1) == ["deploy@web-1", "root@web-1", "ubuntu@web-1"]
    assert resource_ssh_principals(resource=web2) == ["root@web-2", "ubuntu@web-2"]
    assert resource_ssh_principals(resource=web1, login="ubuntu") == ["ubuntu@web-1"]
    assert resource_ssh_principals(resource=web1, login="dev") == []
    assert resource_ssh_principals(resource=dev1) == ["dev@dev-1"]


def test_host_principals_and_revoked_keys_cost_a_constant_number_of_queries(
    requester, reviewer, web_ssh, web1, web2, django_assert_num_queries
):
    for resource in (web1, web2):
        issue(granted(requester, reviewer, role=web_ssh, resources=[resource]))
    for _ in range(3):
        issue(granted(make_user(groups=("engineers",)), reviewer, role=web_ssh, resources=[web1]))

    with django_assert_num_queries(2):
        assert resource_ssh_principals(resource=web1) == ["deploy@web-1", "ubuntu@web-1"]
    with django_assert_num_queries(2):
        assert ssh_revoked_public_keys() == []


def _relabel_out_of_the_role(user, resource):
    make_resource(resource.name, labels={"env": "staging"})


def _leave_the_group(user, resource):
    user.groups.remove(Group.objects.get(name="engineers"))


def _deactivate(user, resource):
    user.is_active = False
    user.save(update_fields=["is_active"])


@pytest.mark.parametrize("lose_access", [_relabel_out_of_the_role, _leave_the_group, _deactivate])
def test_losing_what_the_access_check_requires_ends_the_certificate_on_the_host_at_once(
    requester, reviewer, web_ssh, web1, lose_access
):
    # A role that still reaches web-1 with the same login after the relabel,
    # so the host's principal could only go because the grant stopped counting.
    make_role("staging-ssh", resource_labels={"env": ["staging", "prod"]}, logins=["ubuntu"])
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    key = ed25519_key()
    issue(grant, key=key)
    assert resource_ssh_principals(resource=web1, login="ubuntu") == ["ubuntu@web-1"]
    assert ssh_revoked_public_keys() == []

    lose_access(requester, web1)

    web1.refresh_from_db()
    assert resource_ssh_principals(resource=web1, login="ubuntu") == []
    assert ssh_revoked_public_keys() == [openssh_public(key)]
    # The same rule everywhere: the access check and the honoured grants agree.
    assert not access_check(user=requester, resource=web1, login="ubuntu").allowed
    assert not Grant.objects.honoured(at=timezone.now()).filter(pk=grant.pk).exists()
    assert grant_refusal(Grant.objects.get(pk=grant.pk), at=timezone.now())


def test_revoked_keys_list_keys_whose_access_ended_early_until_their_certificates_expire(
    requester, reviewer, revoker, web_ssh, web1, web2
):
    kept = granted(requester, reviewer, role=web_ssh, resources=[web1])
    revoked = granted(requester, reviewer, role=web_ssh, resources=[web2])
    kept_key, revoked_key = ed25519_key(), ed25519_key()
    issue(kept, key=kept_key)
    revoked_cert = issue(revoked, key=revoked_key)
    assert ssh_revoked_public_keys() == []

    grant_revoke(grant=revoked, by=revoker, reason="incident over")

    assert ssh_revoked_public_keys() == [openssh_public(revoked_key)]
    # Once the certificate would have expired anyway, hosts refuse it without the list.
    assert ssh_revoked_public_keys(at=revoked_cert.valid_before) == []


@pytest.mark.parametrize("how", ["deactivated", "removed from the group"])
def test_revoked_keys_include_owners_who_lost_access(requester, reviewer, web_ssh, web1, how):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    key = ed25519_key()
    issue(grant, key=key)
    other = make_user("dana", groups=("engineers",))
    issue(granted(other, reviewer, role=web_ssh, resources=[web1]))

    if how == "deactivated":
        requester.is_active = False
        requester.save(update_fields=["is_active"])
    else:
        requester.groups.clear()

    assert ssh_revoked_public_keys() == [openssh_public(key)]


# --- the admin: read-only, and never the private key ------------------------------------------------


def test_admin_shows_cas_and_certificates_read_only_without_the_private_key(
    admin_client, requester, reviewer, web_ssh, web1
):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    issued = issue(grant)
    ca = SSHCertificateAuthority.objects.get()
    secret = "".join(ca.private_key.splitlines()[1:-1])[:40]
    pages = [
        reverse("admin:requests_app_sshcertificateauthority_changelist"),
        reverse("admin:requests_app_sshcertificateauthority_change", args=[ca.pk]),
        reverse("admin:requests_app_issuedcertificate_changelist"),
        reverse("admin:requests_app_issuedcertificate_change", args=[issued.pk]),
        reverse("admin:requests_app_issuedcertificate_changelist") + f"?q={issued.serial}",
    ]

    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "PRIVATE KEY" not in html and secret not in html, url
    listing = admin_client.get(pages[2]).content.decode()
    assert str(issued.serial) in listing and "deploy@web-1, ubuntu@web-1" in listing
    assert ca.fingerprint in admin_client.get(pages[0]).content.decode()
    for model in ("sshcertificateauthority", "issuedcertificate"):
        assert admin_client.get(reverse(f"admin:requests_app_{model}_add")).status_code == 403
    delete = reverse("admin:requests_app_sshcertificateauthority_delete", args=[ca.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert SSHCertificateAuthority.objects.filter(pk=ca.pk).exists()


# --- manage.py ssh_ca -----------------------------------------------------------------------------------


def run_ssh_ca(*args: str) -> str:
    out = io.StringIO()
    call_command("ssh_ca", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_ssh_ca_command_inits_rotates_and_lists_without_printing_the_private_key():
    created = run_ssh_ca("init")
    again = run_ssh_ca("init")
    rotated = run_ssh_ca("rotate", "--trust-old-for", "7d")
    listing = run_ssh_ca("list")

    first, second = SSHCertificateAuthority.objects.order_by("created_at", "id")
    assert created.splitlines() == [f"created user-ca-1 {first.fingerprint}", first.public_key]
    assert again.splitlines()[0] == f"already exists: user-ca-1 {first.fingerprint}"
    assert rotated.splitlines()[0] == f"created user-ca-2 {second.fingerprint} (signs from now on)"
    assert rotated.splitlines()[1].startswith(f"retired user-ca-1 {first.fingerprint} (trusted until ")
    assert listing.splitlines()[0].startswith(f"user-ca-2  {second.fingerprint}  signing")
    assert listing.splitlines()[1].startswith(f"user-ca-1  {first.fingerprint}  trusted until ")
    for output in (created, again, rotated, listing):
        assert "PRIVATE KEY" not in output
    first.refresh_from_db()
    assert first.trusted_until - first.retired_at == timedelta(days=7)


def test_ssh_ca_rotate_refuses_a_bad_overlap():
    with pytest.raises(CommandError, match="--trust-old-for: 'soon' is not a duration"):
        run_ssh_ca("rotate", "--trust-old-for", "soon")

    assert not SSHCertificateAuthority.objects.exists()


def test_a_role_narrowed_to_match_nothing_ends_its_resource_grants_on_the_host(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    key = ed25519_key()
    issue(grant, key=key)

    web_ssh.resource_kinds = []
    web_ssh.save(update_fields=["resource_kinds"])

    assert resource_ssh_principals(resource=web1) == []
    assert ssh_revoked_public_keys() == [openssh_public(key)]
    assert grant_refusal(Grant.objects.get(pk=grant.pk), at=timezone.now()) == (
        "role web-ssh no longer grants access to node/web-1"
    )


# --- the signing key, decrypted once per process ------------------------------------------------


def _signer(certificate: IssuedCertificate) -> str:
    return openssh_public_line(parse_certificate(certificate.certificate).signature_key())


def test_the_ca_key_is_decrypted_once_and_a_re_encrypted_key_is_read_again(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    issue(grant)  # makes the CA
    issue(grant)  # reads it back and caches its key
    ca = SSHCertificateAuthority.objects.get()
    real = ca.public_key.rsplit(" ", 1)[0]
    # Swap the cached key for another: a certificate signed by it proves the cache is what signs.
    [cache_key] = [k for k in keys_module._ca_private_keys if k[:2] == (ca.pk, ca.fingerprint)]
    impostor = ed25519_key()
    keys_module._ca_private_keys[cache_key] = impostor
    assert _signer(issue(grant)) == openssh_public_line(impostor.public_key())

    new_key = Fernet.generate_key().decode()
    with override_settings(JITPORTAL_ENCRYPTION_KEYS=[new_key, *settings.JITPORTAL_ENCRYPTION_KEYS]):
        with transaction.atomic():
            encrypted_fields_rotate()
        # The stored ciphertext changed, so the entry cached for the old one is not used.
        assert _signer(issue(grant)) == real


def test_a_rotated_ca_signs_the_next_certificate_although_the_old_key_is_cached(requester, reviewer, web_ssh, web1):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    old = _signer(issue(grant))
    assert _signer(issue(grant)) == old

    new = ssh_ca_rotate(trust_old_for=timedelta(0)).new

    assert _signer(issue(grant)) == new.public_key.rsplit(" ", 1)[0] != old


def test_issuing_a_certificate_costs_the_same_few_queries_however_many_grants_are_held(
    requester, reviewer, web_ssh, web1
):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    issue(grant)

    def statements() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            issue(grant)
        sqls = [q["sql"] for q in queries.captured_queries]
        return sum(1 for sql in sqls if not re.match(r"\s*(SAVEPOINT|RELEASE)", sql)), sum(
            1 for sql in sqls if re.match(r"\s*SAVEPOINT", sql)
        )

    certificates._remembered.clear()
    before = statements()
    for _ in range(20):
        granted(requester, reviewer, role=web_ssh, resources=[web1])
    certificates._remembered.clear()
    # The grant with its role, owner, resource, eligibility and the signing CA; then the certificate and its
    # audit event, in one statement on PostgreSQL. One savepoint: the write's own transaction inside the test's.
    postgresql = connection.vendor == "postgresql"
    assert before == statements() == ((2, 1) if postgresql else (3, 1))
    # The next certificate for the same grant is the write alone on PostgreSQL: it confirms the row remembered.
    assert statements() == ((1, 1) if postgresql else (3, 1))


@pytest.mark.parametrize("change", ["logins", "labels", "name", "extensions"])
def test_a_certificate_after_a_change_to_the_role_or_resource_says_what_they_say_now(
    requester, reviewer, web_ssh, web1, change
):
    grant = granted(requester, reviewer, role=web_ssh, resources=[web1])
    assert issue(grant).principals == ["deploy@web-1", "ubuntu@web-1"]
    if change == "logins":
        web_ssh.logins = ["ubuntu"]
        web_ssh.save()
    elif change == "extensions":
        web_ssh.ssh_permit_pty = not web_ssh.ssh_permit_pty
        web_ssh.save()
    elif change == "name":
        web1.name = "web-one"
        web1.save()
    else:
        web1.labels = {**web1.labels, "env": "dev"}
        web1.save()

    if change == "labels":
        with pytest.raises(PermissionRefused, match="no longer grants access"):
            issue(grant)
        return
    issued = issue(grant)

    expected = {
        "logins": ["ubuntu@web-1"],
        "extensions": ["deploy@web-1", "ubuntu@web-1"],
        "name": ["deploy@web-one", "ubuntu@web-one"],
    }[change]
    assert issued.principals == expected
    certificate = ssh.load_ssh_public_identity(issued.certificate.encode())
    assert [p.decode() for p in certificate.valid_principals] == expected
    assert (b"permit-pty" in certificate.extensions) == web_ssh.ssh_permit_pty
