"""What the inventory tells the apps above it, which it may not import."""

from __future__ import annotations

from django.dispatch import Signal

# Sent inside the writing transaction after resources were created or their
# kind or labels written, with ``resource_ids``: whatever was worked out from
# them (which roles match them) is brought up to date in the same transaction.
resources_changed = Signal()
