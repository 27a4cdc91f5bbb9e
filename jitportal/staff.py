"""The staff flag: the one capability read straight off the user record.

It is here, below every app, because apps under ``accounts`` (the inventory's
admin) ask it too; ``accounts.capabilities`` hands it on with the others, and
callers above ``accounts`` take it from there.
"""

from __future__ import annotations

STAFF_REFUSAL = "You need the staff flag."


def signed_in(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active)


def may_configure(user) -> bool:
    """Edit roles, resources and notification channels: the staff flag, and nothing more."""
    return signed_in(user) and (user.is_staff or user.is_superuser)
