"""The Celery app: configuration from Django settings (``CELERY_*``), tasks from each app's ``tasks.py``.

Run a worker with ``celery -A jitportal worker`` and exactly one scheduler
with ``celery -A jitportal beat``; see README.md.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jitportal.settings")

app = Celery("jitportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
