"""Log lines as text or as one JSON object each, and the request id they carry.

``JITPORTAL_LOG_FORMAT=json`` turns every line of the web processes (Django
and gunicorn), the Celery worker and beat into one JSON object: ``time``,
``level``, ``logger``, ``message``, ``request_id`` when the line was written
while serving a request (or running a task that request enqueued), and
``exception`` when there is one. A log shipper reads them without parsing
free text, and one request's lines, across web and worker, share one id.

The id lives in a context variable: set by ``RequestIdMiddleware`` for the
length of a request, carried to Celery in a message header
(``jitportal.celery``), and copied onto each record by ``RequestIdFilter``.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured

FORMATS = ("text", "json")

request_id: ContextVar[str | None] = ContextVar("jitportal_request_id", default=None)

# Accepted from a client or a proxy only in this shape: short, and nothing a
# log line, a header or a terminal could be confused by.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def safe_request_id(value: object) -> str | None:
    """``value`` if it is a safe short token to reuse as a request id, else ``None``."""
    if isinstance(value, str) and _SAFE_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts the current request id (or ``None``) on every record that passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or _access_log_request_id(record)
        if rid is not None:
            line["request_id"] = rid
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def _access_log_request_id(record: logging.LogRecord) -> str | None:
    # gunicorn writes its access line after the response has left Django, so
    # the context variable is unset by then; the response's own header is in
    # the record's arguments (gunicorn's "{name}o" atoms).
    if record.name == "gunicorn.access" and isinstance(record.args, dict):
        return safe_request_id(record.args.get("{x-request-id}o"))
    return None


def log_format(value: str | None) -> str:
    """The ``JITPORTAL_LOG_FORMAT`` value checked: ``text`` (the default) or ``json``."""
    chosen = (value or "text").strip().lower()
    if chosen not in FORMATS:
        raise ImproperlyConfigured(f"JITPORTAL_LOG_FORMAT={value!r} is not one of: {', '.join(FORMATS)}.")
    return chosen


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """Django's ``LOGGING``: everything to stderr through the root logger."""
    handler: dict[str, Any] = {"class": "logging.StreamHandler", "filters": ["request_id"]}
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
    }
    if log_format == "json":
        handler["formatter"] = "json"
        config["formatters"] = {"json": {"()": JsonFormatter}}
        # Django's own default handlers (a plain console under DEBUG, mail to
        # ADMINS) would write text beside the JSON: its records go to the root only.
        config["loggers"] = {
            name: {"handlers": [], "level": "INFO", "propagate": True} for name in ("django", "django.server")
        }
    return config


def gunicorn_logconfig(*, log_format: str) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its error and access lines as JSON too (empty for text)."""
    if log_format != "json":
        return {}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]},
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
                "filters": ["request_id"],
            },
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }


def use_json(logger: logging.Logger) -> None:
    """Give the handlers Celery set up on ``logger`` the JSON formatter and the request id."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
