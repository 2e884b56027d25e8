"""Private files of the agent: 0700 directories and 0600 files written atomically.

The agent key and the private keys live here, so a crash mid-write must leave either the
old file or the new one, never a truncated key: a temp file is written and fsynced
through the deploy engine's ``OsFileSystem`` (created 0600, ``O_EXCL``, ``O_NOFOLLOW``),
renamed over the target, and the directory fsynced so the rename survives a power cut.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from certctl.deploy import OsFileSystem

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

_FS = OsFileSystem()


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700, tightening a looser one."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) atomically and durably."""
    temp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    try:
        _FS.create(str(temp), data)
        _FS.chmod(str(temp), PRIVATE_FILE_MODE)  # whatever the umask
        _FS.fsync(str(temp))
        _FS.rename(str(temp), str(path))
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _FS.fsync_dir(str(path.parent))
