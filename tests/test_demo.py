"""What ``make demo`` sets up: the policy and an email channel whose messages show in ``make run``'s terminal."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from accounts.models import User
from audit.models import AuditEvent
from inventory.models import Resource
from requests_app.models import Notification, NotificationChannel, SSHCertificateAuthority
from requests_app.notifications.delivery import notification_deliver
from requests_app.services import request_create

REPO = Path(__file__).resolve().parents[1]
CONSOLE_EMAIL = "django.core.mail.backends.console.EmailBackend"

pytestmark = pytest.mark.django_db


def demo_commands() -> list[list[str]]:
    """The ``manage.py`` commands of the Makefile's ``demo`` recipe, in order."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    return [shlex.split(args) for args in re.findall(r"manage\.py\s+([^&;\n]+)", recipe)]


def make_demo() -> None:
    for command in demo_commands():
        call_command(*command, stdout=io.StringIO())


def test_make_demo_applies_the_policy_and_makes_an_email_channel_and_the_ssh_ca():
    assert [c[0] for c in demo_commands()] == ["apply", "email_channel", "ssh_ca"]

    make_demo()
    make_demo()  # as every `make run` does: nothing changes the second time

    channel = NotificationChannel.objects.get()
    assert (channel.kind, channel.enabled, channel.email_to) == (NotificationChannel.Kind.EMAIL, True, "")
    assert sorted(channel.events) == sorted(NotificationChannel.Event.values)
    assert AuditEvent.objects.filter(action="channel.created").count() == 1
    assert not AuditEvent.objects.filter(action="channel.updated").exists()
    # The CA hosts fetch from GET /api/v1/ca/ssh/, which never makes one itself.
    assert SSHCertificateAuthority.objects.count() == 1
    assert AuditEvent.objects.filter(action="ssh_ca.created").count() == 1


def test_a_new_demo_request_prints_the_reviewers_being_asked_with_a_link_to_the_served_port(capsys):
    make_demo()
    capsys.readouterr()
    alice = User.objects.get(username="alice")

    with override_settings(JITPORTAL_BASE_URL="http://127.0.0.1:8100", EMAIL_BACKEND=CONSOLE_EMAIL):
        request = request_create(
            requester=alice, resources=[Resource.objects.get(name="web-1")], reason="INC-1 disk", duration="30m"
        )
        notification = Notification.objects.get(event=NotificationChannel.Event.REQUEST_CREATED)
        assert notification_deliver(notification_id=notification.pk) == Notification.Status.DELIVERED

    printed = capsys.readouterr().out
    assert "To: bob@example.com, carol@example.com" in printed
    assert f"http://127.0.0.1:8100/admin/requests_app/accessrequest/{request.pk}/change/" in printed
    assert "INC-1 disk" in printed


def test_email_channel_refuses_bad_addresses_and_unknown_channels_of_another_kind():
    NotificationChannel.objects.create(name="sre-room", kind=NotificationChannel.Kind.SLACK)

    with pytest.raises(CommandError, match="is a Slack incoming webhook channel"):
        call_command("email_channel", "sre-room", stdout=io.StringIO())
    with pytest.raises(CommandError, match="'not-an-address' is not an email address"):
        call_command("email_channel", "ops", "--to", "not-an-address", stdout=io.StringIO())

    assert NotificationChannel.objects.count() == 1
    assert not AuditEvent.objects.filter(action__startswith="channel.").exists()


def test_email_channel_updates_recipients_and_events_and_says_so():
    out = io.StringIO()
    call_command("email_channel", "ops", stdout=out)
    call_command("email_channel", "ops", "--to", "ops@example.com", "--event", "request.created", stdout=out)
    call_command("email_channel", "ops", "--to", "ops@example.com", "--event", "request.created", stdout=out)

    assert out.getvalue().splitlines() == [
        "email channel ops: created",
        "email channel ops: updated",
        "email channel ops: unchanged",
    ]
    channel = NotificationChannel.objects.get(name="ops")
    assert (channel.email_to, channel.events) == ("ops@example.com", ["request.created"])
