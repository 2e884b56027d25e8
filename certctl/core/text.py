"""Which characters a string from the network may hold, and how free text is bounded.

One definition for every edge (API path, query, headers and JSON bodies; what the agent
reports; what the audit stores), so the server and the agent cannot disagree about what is
hostile. Two classes of text:

- **names** (ids, names, host names, paths, every field that is not free text): no C0 or
  C1 control character at all (tab and newline included), no DEL, and no bidirectional
  override or isolate (U+202A to U+202E, U+2066 to U+2069), which make a log line or a table
  show something other than what is stored, and no lone surrogate (JSON can carry one;
  UTF-8 and so the database cannot);
- **free text** (a job's error, a verification's detail, which hold multi-line command
  output): newlines, carriage returns and tabs are allowed; everything else above is not.
  Free text is bounded by ``FREE_TEXT_LIMIT`` characters, its middle cut out with a marker
  that says how much was dropped, rather than refused: a chatty ``nginx -t`` must not keep a job
  from being reported.
"""

from __future__ import annotations

import re
from typing import Final

FREE_TEXT_LIMIT: Final = 8192
"""Characters kept of one free-text field (a job error holding command output)."""

_BIDI: Final = "\u202a-\u202e\u2066-\u2069"
_SURROGATES: Final = "\ud800-\udfff"
_NAME_HOSTILE: Final = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")
_TEXT_HOSTILE: Final = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")


def hostile_in_name(value: str) -> str | None:
    """The first character a name may not hold, or ``None`` when ``value`` is clean."""
    found = _NAME_HOSTILE.search(value)
    return None if found is None else found.group()


def hostile_in_text(value: str) -> str | None:
    """The first character free text may not hold (newline and tab are fine), or ``None``."""
    found = _TEXT_HOSTILE.search(value)
    return None if found is None else found.group()


def describe(char: str) -> str:
    """``U+0000`` and the like: how an error message names a character it refused."""
    return f"U+{ord(char):04X}"


def escape_hostile(value: str, *, free_text: bool = False) -> str:
    """``value`` with every refused character written as ``\\uXXXX``: what we log or store
    when a hostile string has to be recorded (an audit of a refused request) rather than
    refused."""
    pattern = _TEXT_HOSTILE if free_text else _NAME_HOSTILE
    return pattern.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def bound_free_text(value: str, limit: int = FREE_TEXT_LIMIT) -> str:
    """``value`` cut to ``limit`` characters, the cut marked with how many were dropped.

    The head and the tail are kept (two thirds and one third of the room), since the
    first lines of a failure usually name its cause and the last ones its verdict. The
    marker is counted inside the limit, so the result is never longer than ``limit``
    (unless ``limit`` is shorter than the marker itself, when only the marker is left).
    """
    if len(value) <= limit:
        return value
    marker = _marker(len(value))
    while True:
        keep = max(limit - len(marker), 0)
        updated = _marker(len(value) - keep)
        if updated == marker:
            head = keep * 2 // 3
            return value[:head] + marker + value[len(value) - (keep - head) :]
        marker = updated


def _marker(dropped: int) -> str:
    return f"\n[... {dropped} characters cut by certctl ...]\n"


def report_text(value: str, limit: int = FREE_TEXT_LIMIT) -> str:
    """Free text made fit to send: hostile characters escaped, then bounded (the agent
    applies this to every error it reports, so command output can never be refused)."""
    return bound_free_text(escape_hostile(value, free_text=True), limit)
