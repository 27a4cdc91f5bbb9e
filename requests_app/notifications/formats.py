"""Each platform's format of a message (Slack, Mattermost, email, signed webhook) and the masked channel URL."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlsplit

from requests_app.notifications.messages import Event, Message, truncate

SIGNATURE_HEADER = "X-Jitportal-Signature"

# --- each platform's format ----------------------------------------------------------


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads <...> as links and mentions (<!channel>); only these three need escaping.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(message: Message) -> dict:
    """An incoming-webhook body: ``text`` for notifications and clients without blocks, ``blocks`` to read."""
    esc = _slack_escape
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{esc(message.title)}*"}},
        {
            "type": "section",
            # Slack allows at most ten fields of 2000 characters.
            "fields": [
                {"type": "mrkdwn", "text": truncate(f"*{esc(label)}*\n{esc(value)}", 2000)}
                for label, value in message.facts[:10]
            ],
        },
    ]
    if message.reason:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n>{esc(message.reason)}"}})
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open in jitportal"},
                    "url": message.link,
                }
            ],
        }
    )
    return {"text": f"{esc(message.title)} <{message.link}|Open in jitportal>", "blocks": blocks}


_MARKDOWN_SPECIAL = str.maketrans({c: f"\\{c}" for c in "\\`*_~[]()#|<>"})


def _markdown_escape(text: str) -> str:
    # A zero-width space after "@" keeps user text from mentioning @channel or @all.
    return text.translate(_MARKDOWN_SPECIAL).replace("@", "@\u200b")


def mattermost_payload(message: Message) -> dict:
    """An incoming-webhook body: markdown ``text`` with the link, the facts as an attachment."""
    esc = _markdown_escape
    attachment = {
        "fallback": f"{message.title} {message.link}",
        "color": _COLORS.get(message.event, "#808080"),
        "title": "Open in jitportal",
        "title_link": message.link,
        "fields": [{"short": True, "title": label, "value": esc(value)} for label, value in message.facts],
    }
    if message.reason:
        attachment["text"] = f"**Reason:** {esc(message.reason)}"
    return {"text": f"**{esc(message.title)}**  [Open in jitportal]({message.link})", "attachments": [attachment]}


_COLORS = {
    Event.REQUEST_CREATED: "#1c7ed6",
    Event.REQUEST_APPROVED: "#2f9e44",
    Event.REQUEST_DENIED: "#e03131",
    Event.REQUEST_EXPIRED: "#868e96",
    Event.GRANT_EXPIRING: "#f08c00",
    Event.GRANT_ENDED: "#868e96",
}


def email_payload(message: Message, recipients: list[str]) -> dict:
    lines = [message.title, ""]
    lines += [f"{label}: {value}" for label, value in message.facts]
    if message.reason:
        lines += ["", "Reason:", message.reason]
    lines += ["", message.link, ""]
    return {"to": recipients, "subject": " ".join(message.title.split()), "body": "\n".join(lines)}


def webhook_body(payload: dict) -> bytes:
    """The exact bytes sent, and signed, for a JSON body."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(body: bytes, secret: str) -> str:
    """``X-Jitportal-Signature`` value: HMAC-SHA256 of the exact body bytes with the channel secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def mask_url(url: str) -> str:
    """Enough of a webhook URL to recognise it, never the token in its path."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "••••"
    if not parts.scheme or not parts.hostname:
        return "••••"
    return f"{parts.scheme}://{parts.hostname}{port}/…/••••"
