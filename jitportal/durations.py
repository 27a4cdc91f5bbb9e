"""Durations as people and scripts write them: seconds or Go-style strings."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> timedelta:
    """Parse ``3600``, ``"3600"``, ``"45s"``, ``"90m"``, ``"1h30m"`` or a timedelta.

    Raises ``ValueError`` with a readable message for anything else, including
    zero and negative values: a duration here always bounds access, so it must
    be positive.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '90m' or '1h30m'")
    elif isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float (JSON has no limit)
            raise ValueError("a duration that long is not accepted") from None
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
            seconds = float(text)
        else:
            if not text or not re.fullmatch(r"([0-9]+(?:\.[0-9]+)?(ms|s|m|h|d))+", text):
                raise ValueError(f"{value!r} is not a duration; use seconds or a string like '45s', '90m' or '1h30m'")
            seconds = sum(float(num) * _UNITS[unit] for num, unit in _PART.findall(text))
    else:
        raise ValueError("a duration is a number of seconds or a string like '90m' or '1h30m'")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    if seconds > 10 * 365 * 86400:
        raise ValueError("a duration that long is not accepted")
    # Whole seconds: a value that rounds to zero would be a zero-length grant.
    if round(seconds) <= 0:
        raise ValueError("a duration must be at least one second")
    return timedelta(seconds=round(seconds))


def _units(delta: timedelta) -> list[tuple[int, str]]:
    """Whole days, hours, minutes and seconds of ``delta`` (0 and below: none), largest first."""
    total = max(int(delta.total_seconds()), 0)
    amounts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, total = divmod(total, size)
        amounts.append((amount, unit))
    return amounts


def format_duration(delta: timedelta) -> str:
    """``timedelta(seconds=5400)`` -> ``"1h30m"``; the inverse of parse_duration."""
    return "".join(f"{amount}{unit}" for amount, unit in _units(delta) if amount) or "0s"


_LONG = {"d": "day", "h": "hour"}
_SHORT = {"m": "min", "s": "s"}


def duration_label(delta: timedelta) -> str:
    """``timedelta(minutes=90)`` -> ``"1 hour 30 min"``: the same units, as people read them on pages."""
    parts = []
    for amount, unit in _units(delta):
        if not amount:
            continue
        if unit in _LONG:
            parts.append(f"{amount} {_LONG[unit]}" + ("" if amount == 1 else "s"))
        else:
            parts.append(f"{amount} {_SHORT[unit]}")
    return " ".join(parts) or "0 s"
