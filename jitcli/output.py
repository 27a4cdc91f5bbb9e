"""Tables, times and durations as the CLI prints them."""

from __future__ import annotations

import sys
from datetime import UTC, datetime


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def local(value: str | datetime | None) -> str:
    moment = parse_time(value) if isinstance(value, str) or value is None else value
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def span(seconds: float) -> str:
    """``5400`` -> ``1h30m``; seconds shown only under ten minutes."""
    seconds = int(seconds)
    if seconds <= 0:
        return "0s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if seconds < 600 and secs:
        parts.append(f"{secs}s")
    return "".join(parts)


def time_left(value: str | None) -> str:
    moment = parse_time(value)
    if moment is None:
        return "-"
    return span((moment - now()).total_seconds())


def table(headers: list[str], rows: list[list[str]], *, file=None) -> None:
    file = file or sys.stdout
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(cell))) for w, cell in zip(widths, row, strict=True)]

    def line(cells) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    print(line(headers), file=file)
    print(line(["-" * w for w in widths]), file=file)
    for row in rows:
        print(line(row), file=file)


def shorten(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def labels(mapping: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((mapping or {}).items()))


def refs(resources: list[dict], *, most: int = 3) -> str:
    names = [r.get("ref") or f"{r.get('kind')}/{r.get('name')}" for r in resources or []]
    if not names:
        return "(role-based)"
    shown = ", ".join(names[:most])
    return f"{shown} (+{len(names) - most})" if len(names) > most else shown


def err(message: str) -> None:
    """Progress and notices go to stderr, so stdout stays the command's output."""
    print(message, file=sys.stderr, flush=True)
