"""Durations as operators write them, in Go's spelling (``90s``, ``1h30m``, ``500ms``)
plus days (``7d``): one grammar for settings and target configs, so a value copied from
one into the other means the same thing.

A bare number is refused rather than guessed at: the earlier implementation read target
durations as integer nanoseconds, so a config carried over cannot be misread silently.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_SHOWN: Final = ("d", "h", "m", "s")


def parse_duration(raw: str) -> timedelta:
    """``raw`` as a duration; ``ValueError`` names the expected form."""
    text = raw.strip()
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(text):
        raise ValueError(f"expected a duration such as 30s, 500ms, 1h30m or 7d, got {raw!r}")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """``value`` in the form ``parse_duration`` reads, in its largest whole unit (``90s``,
    ``5m``, ``168h`` as ``7d``), else in milliseconds, so what is shown can be pasted back."""
    millis = round(value.total_seconds() * 1000)
    for unit in _SHOWN:
        size = round(_UNITS[unit] * 1000)
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"
