"""A real sshd configured from the portal's API accepts exactly what the grants allow.

Each host is an OpenSSH sshd whose TrustedUserCAKeys, AuthorizedPrincipalsFile
and RevokedKeys are written from the API's answers (as a host's cron job
would), and every connection is made by the system ssh client.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import ssh
from rest_framework.test import APIClient

from accounts.models import ApiToken
from inventory.models import Resource
from requests_app import services
from requests_app.credentials.ca import ssh_ca_init, ssh_ca_rotate
from tests.conftest import give_capabilities, make_resource, make_role, make_user
from tests.ssh.conftest import LOGIN, Sshd, ssh_run
from tests.ssh.keys import ed25519_key, openssh_private, openssh_public

pytestmark = pytest.mark.django_db


class Host:
    """A resource and the sshd that plays it, configured from the API like a real host."""

    def __init__(self, server: Sshd, resource: Resource, agent: APIClient):
        self.server = server
        self.resource = resource
        self.agent = agent

    def refresh(self) -> None:
        """What the host's timer does: fetch the CA keys, its principals and the revoked keys."""
        ca = self.agent.get("/api/v1/ca/ssh/")
        principals = self.agent.get(f"/api/v1/resources/{self.resource.name}/ssh-principals/", {"login": LOGIN})
        revoked = self.agent.get("/api/v1/ssh/revoked-keys/")
        for response in (ca, principals, revoked):
            assert response.status_code == 200, response.content
        self.server.write_trusted_ca_keys(ca.content.decode())
        self.server.write_principals(LOGIN, principals.content.decode())
        self.server.write_revoked_keys(revoked.content.decode())


class Person:
    """A user with a key pair on disk, asking for certificates over the API."""

    def __init__(self, user, directory: Path):
        self.user = user
        self.client = APIClient()
        self.client.force_authenticate(user=user)
        self.directory = directory
        directory.mkdir(exist_ok=True)
        self.key_path = directory / "id_ed25519"
        private = ed25519_key()
        self.key_path.write_text(openssh_private(private))
        self.key_path.chmod(0o600)
        self.public_key = openssh_public(private)

    def certificate(self, grant, name: str = "id_ed25519-cert.pub") -> Path:
        response = self.client.post(f"/api/v1/grants/{grant.pk}/certificate/", {"public_key": self.public_key})
        assert response.status_code == 201, response.content
        path = self.directory / name
        path.write_text(response.json()["certificate"] + "\n")
        return path

    def ssh(self, host: Host, certificate: Path | None, command: str = "echo ok"):
        return ssh_run(host.server, key=self.key_path, certificate=certificate, command=command)


def connected(result) -> bool:
    return result.returncode == 0 and result.stdout.strip() == "ok"


def refused(result) -> bool:
    return result.returncode == 255 and "Permission denied (publickey)" in result.stderr


@pytest.fixture
def lab_role(db):
    return make_role("lab-ssh", approvals=1, resource_labels={"env": ["lab"]}, logins=[LOGIN, "nobody-else"])


@pytest.fixture
def hosts(sshd_factory, lab_role) -> tuple[Host, Host]:
    agent = APIClient()
    _, token = ApiToken.objects.create(
        user=give_capabilities(make_user("host-agent"), "check_access"), can_check_access=True
    )
    agent.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    ssh_ca_init()  # as the deployment does before configuring hosts
    made = []
    for name in ("lab-1", "lab-2"):
        server = sshd_factory(name)
        resource = make_resource(name, labels={"env": "lab"}, address=server.address)
        host = Host(server, resource, agent)
        host.refresh()
        made.append(host)
    return made[0], made[1]


@pytest.fixture
def alice(requester, tmp_path) -> Person:
    return Person(requester, tmp_path / "alice")


def grant_for(alice: Person, reviewer, *hosts: Host, duration=None):
    """An approved grant, and the hosts' timers having run since (principals follow the grants)."""
    access_request = services.request_create(
        requester=alice.user, resources=[h.resource for h in hosts], reason="INC-9", duration=duration
    )
    services.request_review(request=access_request, reviewer=reviewer, decision="approve")
    for host in hosts:
        host.refresh()
    return access_request.grants.get()


def test_hosts_are_configured_from_the_api(hosts, alice, reviewer, lab_role):
    lab1, lab2 = hosts
    # No grant yet: no principal is accepted anywhere.
    assert (lab1.server.directory / "principals" / LOGIN).read_text() == ""

    access_request = services.request_create(requester=alice.user, roles=[lab_role], reason="INC-8")
    services.request_review(request=access_request, reviewer=reviewer, decision="approve")
    lab1.refresh()
    lab2.refresh()

    assert (lab1.server.directory / "principals" / LOGIN).read_text() == f"{LOGIN}@lab-1\n"
    assert (lab2.server.directory / "principals" / LOGIN).read_text() == f"{LOGIN}@lab-2\n"
    assert (lab1.server.directory / "trusted_user_ca_keys").read_text().startswith("ssh-ed25519 ")
    assert (lab1.server.directory / "revoked_keys").read_text() == ""


def test_without_a_grant_there_is_no_way_in(hosts, alice, tmp_path):
    lab1, _ = hosts
    # A key alone, and a certificate from a CA the host does not trust, naming the right principal.
    rogue_ca = ed25519_key()
    rogue = (
        ssh.SSHCertificateBuilder()
        .public_key(serialization.load_ssh_public_key(alice.public_key.encode()))
        .serial(1)
        .type(ssh.SSHCertificateType.USER)
        .key_id(b"rogue")
        .valid_principals([f"{LOGIN}@lab-1".encode()])
        .valid_after(int(time.time()) - 60)
        .valid_before(int(time.time()) + 3600)
        .add_extension(b"permit-pty", b"")
        .sign(rogue_ca)
    )
    rogue_path = tmp_path / "rogue-cert.pub"
    rogue_path.write_bytes(rogue.public_bytes() + b"\n")

    assert refused(alice.ssh(lab1, certificate=None))
    assert refused(alice.ssh(lab1, certificate=rogue_path))
    # sshd saw the certificate and turned it down: the CA is not one it trusts.
    assert any("Failed publickey" in line and "ID rogue (serial 1)" in line for line in lab1.server.log().splitlines())


def test_approved_certificate_runs_a_command_on_its_host_only_until_revoked(hosts, alice, reviewer, revoker):
    lab1, lab2 = hosts
    grant = grant_for(alice, reviewer, lab1)
    certificate = alice.certificate(grant)

    assert connected(alice.ssh(lab1, certificate))
    # The same certificate on a host it was not granted for: its principal names lab-1, not lab-2.
    assert refused(alice.ssh(lab2, certificate))
    assert "does not contain an authorized principal" in lab2.server.log()

    services.grant_revoke(grant=grant, by=revoker, reason="incident over")
    lab1.refresh()

    assert refused(alice.ssh(lab1, certificate))
    assert "revoked by file" in lab1.server.log()


@pytest.mark.parametrize("lose_access", ["relabel", "leave the group", "deactivate"])
def test_certificate_stops_working_once_the_access_check_stops_honouring_its_grant(hosts, alice, reviewer, lose_access):
    lab1, _ = hosts
    grant = grant_for(alice, reviewer, lab1)
    certificate = alice.certificate(grant)
    assert connected(alice.ssh(lab1, certificate))

    if lose_access == "relabel":
        make_resource("lab-1", labels={"env": "retired"}, address=lab1.server.address)
    elif lose_access == "leave the group":
        alice.user.groups.clear()
    else:
        alice.user.is_active = False
        alice.user.save(update_fields=["is_active"])
    lab1.refresh()

    assert refused(alice.ssh(lab1, certificate))
    assert "revoked by file" in lab1.server.log()


def test_role_based_grant_reaches_every_host_the_role_matches(hosts, alice, reviewer, lab_role):
    lab1, lab2 = hosts
    access_request = services.request_create(requester=alice.user, roles=[lab_role], reason="INC-10")
    services.request_review(request=access_request, reviewer=reviewer, decision="approve")
    lab1.refresh()
    lab2.refresh()
    certificate = alice.certificate(access_request.grants.get())

    assert connected(alice.ssh(lab1, certificate))
    assert connected(alice.ssh(lab2, certificate))


def test_certificate_stops_working_when_the_grant_ends(hosts, alice, reviewer):
    lab1, _ = hosts
    grant = grant_for(alice, reviewer, lab1, duration="4s")
    certificate = alice.certificate(grant)
    valid_before = ssh.load_ssh_public_identity(certificate.read_bytes()).valid_before

    assert connected(alice.ssh(lab1, certificate))

    time.sleep(max(0.0, valid_before - time.time()) + 1.5)
    result = alice.ssh(lab1, certificate)

    assert refused(result)
    assert "expired" in lab1.server.log()


def test_ca_rotation_keeps_old_certificates_working_during_the_overlap_only(hosts, alice, reviewer):
    lab1, _ = hosts
    grant = grant_for(alice, reviewer, lab1)
    old_certificate = alice.certificate(grant, "old-cert.pub")

    ssh_ca_rotate(trust_old_for=timedelta(days=7))
    lab1.refresh()
    new_certificate = alice.certificate(grant, "new-cert.pub")

    assert len((lab1.server.directory / "trusted_user_ca_keys").read_text().splitlines()) == 2
    assert connected(alice.ssh(lab1, old_certificate))
    assert connected(alice.ssh(lab1, new_certificate))

    # The old key leaked: stop trusting it now.
    ssh_ca_rotate(trust_old_for=timedelta(0))
    lab1.refresh()
    newest_certificate = alice.certificate(grant, "newest-cert.pub")

    assert refused(alice.ssh(lab1, old_certificate))
    assert refused(alice.ssh(lab1, new_certificate))
    assert connected(alice.ssh(lab1, newest_certificate))
