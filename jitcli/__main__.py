"""``python -m jitcli``: the same as the ``jit`` command."""

from __future__ import annotations

import sys

from jitcli.main import main

if __name__ == "__main__":
    sys.exit(main())
