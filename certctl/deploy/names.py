"""Names of the files the engine creates next to a destination.

``<path>.certctl-tmp.<ns>`` and ``<path>.certctl-bak.<ns>`` with a 19-digit, zero-padded
nanosecond stamp, so lexical order is chronological order and a janitor can sort by name.
Matching is exact (base name, marker, 19 digits) so that a sweep never removes a file
an operator named similarly.
"""

from __future__ import annotations

import os
import re
import threading
import time

TEMP_MARK = ".certctl-tmp."
BACKUP_MARK = ".certctl-bak."
STAMP_DIGITS = 19

_last_stamp = 0
_stamp_guard = threading.Lock()


def stamp() -> str:
    """A wall-clock nanosecond stamp, strictly increasing within the process.

    Strictly increasing so two deploys in the same nanosecond (or a coarse clock) still get
    distinct, correctly ordered backup names.
    """
    global _last_stamp  # noqa: PLW0603 - one process-wide sequence is the point
    with _stamp_guard:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return f"{_last_stamp:0{STAMP_DIGITS}d}"


def temp_path(path: str, when: str) -> str:
    return f"{path}{TEMP_MARK}{when}"


def backup_path(path: str, when: str) -> str:
    return f"{path}{BACKUP_MARK}{when}"


def _matching(path: str, names: list[str], mark: str) -> list[str]:
    pattern = re.compile(re.escape(os.path.basename(path) + mark) + rf"\d{{{STAMP_DIGITS}}}")
    directory = os.path.dirname(path)
    return sorted(os.path.join(directory, n) for n in names if pattern.fullmatch(n))


def temps_of(path: str, names: list[str]) -> list[str]:
    """Temp files of ``path`` among the directory entries ``names``."""
    return _matching(path, names, TEMP_MARK)


def backups_of(path: str, names: list[str]) -> list[str]:
    """Backups of ``path`` among ``names``, oldest first."""
    return _matching(path, names, BACKUP_MARK)
