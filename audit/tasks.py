"""Celery tasks of the audit log, run from beat (``CELERY_BEAT_SCHEDULE`` in settings).

Both are safe to run twice at once: the sealer queues on the chain head's lock.
"""

from __future__ import annotations

from celery import shared_task

from audit.services import audit_checkpoint, audit_seal


@shared_task
def seal_audit() -> int:
    return audit_seal()


@shared_task
def checkpoint_audit() -> bool:
    return audit_checkpoint().ok
