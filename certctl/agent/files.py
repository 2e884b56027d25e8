"""Private files of the agent: 0700 directories and 0600 files written atomically.

The agent key and the private keys live here, so a crash mid-write must leave either the
old file or the new one, never a truncated key: a temp file is written and fsynced
through the deploy engine's ``OsFileSystem`` (created 0600, ``O_EXCL``, ``O_NOFOLLOW``),
renamed over the target, and the directory fsynced so the rename survives a power cut.
"""

from __future__ import annotations

import os
from pathlib import Path

from certctl.deploy import write_atomic

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700, tightening a looser one."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) atomically and durably."""
    write_atomic(path, data, PRIVATE_FILE_MODE)
