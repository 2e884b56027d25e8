"""The intent journal: what a deploy is about to do, durable before it does it.

One JSON file per deploy in the engine's state directory, written (temp file, fsync,
rename, directory fsync) before the first backup or temp file exists, so that after a
crash ``recover`` knows every file the deploy may have created and what the destinations
held before. ``deploy-<stamp>.json`` means "in progress: roll back"; renaming it to
``deploy-<stamp>.committed.json`` is the commit point ("roll forward"). A rename plus a
directory fsync is the cheapest durable state change there is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from certctl.core.errors import CertctlError
from certctl.deploy.fs import FileSystem
from certctl.deploy.run import Command

FORMAT = 1
_NAME = re.compile(r"deploy-(\d{19})(\.committed)?\.json")
_PARTIAL = re.compile(r"deploy-\d{19}\.json\.tmp")


class JournalUnreadable(CertctlError, ValueError):
    """A journal file that does not decode; only corruption or a foreign file gets here."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A live file as observed: content hash, permission bits and owner."""

    sha256: str
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One destination: its temp, its backup (``None`` if it did not exist) and both hashes."""

    path: str
    temp: str
    backup: str | None
    new_sha256: str
    old: Snapshot | None


@dataclass(frozen=True, slots=True)
class Journal:
    stamp: str
    state_dir: str
    target_type: str
    keep_backups: int
    reload: Command | None
    hook_timeout: float
    entries: tuple[Entry, ...]
    committed: bool = False

    @property
    def path(self) -> str:
        suffix = ".committed.json" if self.committed else ".json"
        return os.path.join(self.state_dir, f"deploy-{self.stamp}{suffix}")

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(e.path for e in self.entries)

    @property
    def backup_paths(self) -> dict[str, str | None]:
        return {e.path: e.backup for e in self.entries}


def encode(journal: Journal) -> bytes:
    body = {
        "format": FORMAT,
        "target_type": journal.target_type,
        "keep_backups": journal.keep_backups,
        "reload": list(journal.reload) if journal.reload is not None else None,
        "hook_timeout": journal.hook_timeout,
        "entries": [
            {
                "path": e.path,
                "temp": e.temp,
                "backup": e.backup,
                "new_sha256": e.new_sha256,
                "old": None
                if e.old is None
                else {
                    "sha256": e.old.sha256,
                    "mode": e.old.mode,
                    "uid": e.old.uid,
                    "gid": e.old.gid,
                },
            }
            for e in journal.entries
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"  # C encoder: no indent


def decode(data: bytes, path: str) -> Journal:
    """Parse the journal at ``path``; its name carries the stamp and the commit mark."""
    try:
        return _decode(data, path)
    except (ValueError, KeyError, TypeError) as exc:
        raise JournalUnreadable(
            f"deploy journal {path} is unreadable ({exc}); restore the files it names by hand "
            "from their .certctl-bak.* copies, then delete it."
        ) from exc


def _decode(data: bytes, path: str) -> Journal:
    match = _NAME.fullmatch(os.path.basename(path))
    if match is None:
        raise ValueError("the file name is not deploy-<19 digits>[.committed].json")
    body: dict[str, Any] = json.loads(data)
    if body["format"] != FORMAT:
        raise ValueError(f"format {body['format']} is not {FORMAT}")
    reload = body["reload"]
    return Journal(
        stamp=match.group(1),
        state_dir=os.path.dirname(path),
        target_type=str(body["target_type"]),
        keep_backups=int(body["keep_backups"]),
        reload=None if reload is None else tuple(str(a) for a in reload),
        hook_timeout=float(body["hook_timeout"]),
        entries=tuple(
            Entry(
                path=str(e["path"]),
                temp=str(e["temp"]),
                backup=None if e["backup"] is None else str(e["backup"]),
                new_sha256=str(e["new_sha256"]),
                old=None if e["old"] is None else Snapshot(**e["old"]),
            )
            for e in body["entries"]
        ),
        committed=match.group(2) is not None,
    )


def write(fs: FileSystem, journal: Journal) -> None:
    """Publish atomically so a concurrent scan never reads half a journal."""
    partial = journal.path + ".tmp"
    try:
        fs.create(partial, encode(journal))
        fs.fsync(partial)
        fs.rename(partial, journal.path)
    except OSError:
        with contextlib.suppress(OSError):
            fs.remove(partial)
        raise
    fs.fsync_dir(journal.state_dir)


def remove(fs: FileSystem, journal: Journal) -> None:
    try:
        fs.remove(journal.path)
    except FileNotFoundError:  # never published: the deploy failed while writing it
        return
    fs.fsync_dir(journal.state_dir)


def is_journal_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def scan(fs: FileSystem, state_dir: str) -> tuple[list[str], list[str]]:
    """Journal files (oldest first) and half-written ones left by a crash."""
    names = sorted(fs.listdir(state_dir))
    found = [os.path.join(state_dir, n) for n in names if _NAME.fullmatch(n)]
    partial = [os.path.join(state_dir, n) for n in names if _PARTIAL.fullmatch(n)]
    return found, partial


def load(fs: FileSystem, path: str) -> Journal:
    return decode(fs.read(path), path)
