"""The one exception type that business rules raise.

Services raise ``DomainError`` (or a subclass) with a message a person can
read; the API turns it into a 4xx, pages into a form error, the admin into a
message. A rule is written once, in the service.

Each refusal also carries a ``code``: a stable, machine-readable word that the
API sends beside ``detail`` so clients (the ``jit`` CLI) branch on it, never on
the wording. A subclass sets the general code; a raise may name a finer one.
"""

from __future__ import annotations


class DomainError(Exception):
    """A rule refused the action. ``field`` names the input at fault, if any."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class PermissionRefused(DomainError):
    """The actor may not do this (self-review, not eligible, not the owner)."""

    status_code = 403
    code = "permission_denied"


class StateConflict(DomainError):
    """The object is not in a state that allows this transition."""

    status_code = 409
    code = "conflict"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"
