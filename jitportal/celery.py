"""The Celery app: configuration from Django settings (``CELERY_*``), tasks from each app's ``tasks.py``.

Run a worker with ``celery -A jitportal worker`` and exactly one scheduler
with ``celery -A jitportal beat``; see README.md.

A task enqueued while serving a request carries that request's id in a
message header, so the worker's log lines for it share the web's id.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals
from django.conf import settings

from jitportal.logs import request_id, safe_request_id, use_json

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jitportal.settings")

app = Celery("jitportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

REQUEST_ID_HEADER = "jitportal_request_id"


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_logs(logger, **kwargs: Any) -> None:
    # Celery keeps its own handlers (stderr or --logfile); only their format changes.
    if settings.JITPORTAL_LOG_FORMAT == "json":
        use_json(logger)


@signals.before_task_publish.connect
def _send_request_id(headers: dict[str, Any], **kwargs: Any) -> None:
    rid = request_id.get()
    if rid is not None:
        headers.setdefault(REQUEST_ID_HEADER, rid)


@signals.task_prerun.connect
def _receive_request_id(task, **kwargs: Any) -> None:
    # Only when the message brought one: a task run eagerly inside a request
    # keeps the request's id, and is not given None over it.
    rid = safe_request_id(getattr(task.request, REQUEST_ID_HEADER, None))
    if rid is not None:
        task.request.jitportal_request_id_token = request_id.set(rid)


@signals.task_postrun.connect
def _forget_request_id(task, **kwargs: Any) -> None:
    token = getattr(task.request, "jitportal_request_id_token", None)
    if token is not None:
        request_id.reset(token)
        task.request.jitportal_request_id_token = None
