"""Every filesystem call the engine makes, behind one small protocol.

The protocol is deliberately granular (create, chmod, fsync and rename are separate calls)
so that the fault-injecting filesystem in ``certctl.testing.faults`` can crash or fail the
engine between any two of them and model what a power cut would keep.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Stat:
    """The parts of a file's metadata a deploy preserves: permission bits and owner."""

    mode: int
    uid: int
    gid: int


class FileSystem(Protocol):
    """Paths are absolute. Errors are ``OSError``; a missing file is ``FileNotFoundError``."""

    def read(self, path: str) -> bytes: ...

    def stat(self, path: str) -> Stat | None:
        """``None`` when nothing exists at ``path``."""
        ...

    def listdir(self, path: str) -> list[str]: ...

    def create(self, path: str, data: bytes) -> None:
        """Create a new file (never an existing one) with mode 0600, not yet durable."""
        ...

    def chmod(self, path: str, mode: int) -> None: ...

    def chown(self, path: str, uid: int, gid: int) -> None: ...

    def fsync(self, path: str) -> None:
        """Make the file's bytes and metadata durable."""
        ...

    def rename(self, src: str, dst: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (creations, renames, removals) durable."""
        ...


class OsFileSystem:
    """The real disk."""

    def read(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def stat(self, path: str) -> Stat | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return Stat(mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def create(self, path: str, data: bytes) -> None:
        # O_EXCL: a name collision must fail, never overwrite; O_NOFOLLOW: a planted symlink
        # at the temp name must not redirect key material elsewhere.
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid)

    def fsync(self, path: str) -> None:
        _fsync_path(path, os.O_RDONLY)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        _fsync_path(path, os.O_RDONLY | os.O_DIRECTORY)


def _fsync_path(path: str, flags: int) -> None:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably, outside any deploy.

    For the small files certctl keeps for itself (CA state, TLS bootstrap material, agent
    keys): a temp file in the same directory, created 0600 with ``O_EXCL``/``O_NOFOLLOW``,
    is written, given ``mode``, fsynced and renamed over ``path``, then the directory is
    fsynced. A reader sees the old file or the new one, whole, and a key is never readable
    by others, not even for a moment.
    """
    fs = OsFileSystem()
    temp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    try:
        fs.create(str(temp), data)
        fs.chmod(str(temp), mode)
        fs.fsync(str(temp))
        fs.rename(str(temp), str(path))
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fs.fsync_dir(str(path.parent))
