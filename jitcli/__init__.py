"""``jit``: the command-line client of jitportal.

It talks to the portal only through its HTTP API (standard library only, no
Django), so it runs wherever Python 3.11 and OpenSSH's client are installed.
"""

from __future__ import annotations

__version__ = "0.1.0"
