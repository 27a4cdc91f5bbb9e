"""The one error type the CLI raises: a message for one line on stderr, and an exit code."""

from __future__ import annotations

# Exit codes (documented in README.md, "The jit CLI").
OK = 0
FAILED = 1  # the portal refused, could not be reached, or the input was wrong
USAGE = 2  # bad command line (argparse's own code)
NOT_LOGGED_IN = 3  # no token, or the portal no longer accepts it
NOT_GRANTED = 4  # the request was denied, cancelled or expired, or access was revoked
INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    def __init__(self, message: str, *, exit_code: int = FAILED):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
