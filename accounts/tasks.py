"""Celery tasks of the accounts app: a few lines around a service each."""

from __future__ import annotations

from celery import shared_task

from accounts.services import tokens_delete_expired


@shared_task
def delete_expired_tokens() -> int:
    return tokens_delete_expired()
