"""Where ``jit`` keeps the server URL and the API token: ``$XDG_CONFIG_HOME/jit/config.json``.

The directory is 0700 and the file 0600: the token is a password for the
portal until it expires. ``JIT_SERVER`` and ``JIT_TOKEN`` in the environment
override the file (for scripts and CI).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from jitcli.errors import CliError


@dataclass
class Config:
    server: str | None = None
    token: str | None = None
    username: str | None = None
    expires_at: str | None = None


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec: a relative value is invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "jit"


def config_path() -> Path:
    return config_dir() / "config.json"


def load() -> Config:
    path = config_path()
    try:
        raw = path.read_text()
    except FileNotFoundError:
        raw = ""
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    data: dict = {}
    if raw.strip():
        try:
            data = json.loads(raw)
        except ValueError:
            raise CliError(f"{path} is not valid JSON; delete it and run 'jit login' again") from None
        if not isinstance(data, dict):
            raise CliError(f"{path} is not a jit configuration; delete it and run 'jit login' again")
    config = Config(**{k: v for k, v in data.items() if k in Config.__dataclass_fields__ and isinstance(v, str)})
    if os.environ.get("JIT_SERVER"):
        config.server = os.environ["JIT_SERVER"]
    if os.environ.get("JIT_TOKEN"):
        config.token = os.environ["JIT_TOKEN"]
    return config


def save(config: Config) -> Path:
    """Write the configuration atomically, readable by its owner only."""
    directory = config_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode does not apply to a directory that already existed.
        if stat.S_IMODE(directory.stat().st_mode) != 0o700:
            directory.chmod(0o700)
        path = config_path()
        temporary = directory / f".config.json.{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({k: v for k, v in asdict(config).items() if v is not None}, handle, indent=2)
            handle.write("\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except OSError as exc:
        raise CliError(f"cannot write the configuration in {directory}: {exc.strerror}") from None
    return path
