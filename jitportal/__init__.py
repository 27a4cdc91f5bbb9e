"""jitportal project package.

The Celery app is loaded with Django so that ``shared_task`` functions bind to
it and ``.delay()`` from web processes uses the configured broker.
"""

from __future__ import annotations

from jitportal.celery import app as celery_app

__all__ = ("celery_app",)
