"""File-level steps shared by ``apply`` and ``recover``, so both undo and clean up alike."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from certctl.deploy import journal as journals
from certctl.deploy.fs import FileSystem
from certctl.deploy.journal import Entry, Journal, Snapshot
from certctl.deploy.names import backups_of, stamp, temp_path, temps_of
from certctl.deploy.ownership import Ownership, apply_ownership
from certctl.deploy.run import Runner

_Selector = Callable[[str, list[str]], list[str]]


@dataclass(frozen=True, slots=True)
class Tools:
    fs: FileSystem
    runner: Runner
    privileged: bool


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def observe(fs: FileSystem, path: str) -> Snapshot | None:
    try:
        data = fs.read(path)
    except FileNotFoundError:
        return None
    st = fs.stat(path)
    if st is None:  # removed between the two calls; only an outside writer does that
        return None
    return Snapshot(sha256=sha256(data), mode=st.mode, uid=st.uid, gid=st.gid)


def sync_dirs(fs: FileSystem, paths: Iterable[str]) -> None:
    for directory in sorted({os.path.dirname(p) for p in paths}):
        fs.fsync_dir(directory)


def undo(tools: Tools, entries: Iterable[Entry]) -> list[str]:
    """Put each destination back as it was: restore its backup, or remove it if it was new.

    Only ever removes a destination that did not exist before the deploy. Returns warnings
    (an unprivileged chown that could not be repeated).
    """
    warnings: list[str] = []
    touched: list[str] = []
    for entry in entries:
        touched.append(entry.path)
        if entry.old is None:
            _remove_if_present(tools.fs, entry.path)
            continue
        warning = _restore(tools, entry, entry.old)
        if warning is not None:
            warnings.append(warning)
    sync_dirs(tools.fs, touched)
    return warnings


def _restore(tools: Tools, entry: Entry, old: Snapshot) -> str | None:
    if entry.backup is None:  # journal written by hand or damaged; never guess
        raise OSError(errno.ENOENT, "no backup recorded for a file that existed", entry.path)
    data = tools.fs.read(entry.backup)
    if sha256(data) != old.sha256:
        raise OSError(errno.EIO, "backup does not hold the previous bytes", entry.backup)
    temp = temp_path(entry.path, stamp())
    tools.fs.create(temp, data)
    warning = apply_ownership(
        tools.fs, temp, Ownership(mode=old.mode, ids=(old.uid, old.gid)), tools.privileged
    )
    tools.fs.fsync(temp)
    tools.fs.rename(temp, entry.path)
    return warning


def sweep_temps(fs: FileSystem, paths: Iterable[str]) -> None:
    """Remove every ``<path>.certctl-tmp.<stamp>``; callers hold the locks of ``paths``."""
    _remove_matching(fs, paths, temps_of)


def prune_backups(fs: FileSystem, paths: Iterable[str], keep: int) -> None:
    """Keep the newest ``keep`` backups of each path."""
    _remove_matching(fs, paths, lambda path, names: backups_of(path, names)[: -keep or None])


def _remove_matching(fs: FileSystem, paths: Iterable[str], select: _Selector) -> None:
    by_dir: dict[str, list[str]] = {}
    for path in paths:
        by_dir.setdefault(os.path.dirname(path), []).append(path)
    for directory, members in sorted(by_dir.items()):
        names = fs.listdir(directory)
        doomed = [victim for path in members for victim in select(path, names)]
        for victim in doomed:
            _remove_if_present(fs, victim)
        if doomed:
            fs.fsync_dir(directory)


def _remove_if_present(fs: FileSystem, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fs.remove(path)


def settle(fs: FileSystem, journal: Journal, forward: bool) -> None:
    """Once the live files are final: drop temps and surplus backups, then the journal.

    Forward keeps the newest backups per retention; backward drops this deploy's backups,
    which only duplicate the restored live files. The journal goes last, so a crash or an
    error here leaves it in place for ``recover`` to finish the cleanup.
    """
    sweep_temps(fs, journal.paths)
    if forward:
        prune_backups(fs, journal.paths, journal.keep_backups)
    else:
        backups = [e.backup for e in journal.entries if e.backup is not None]
        for backup in backups:
            _remove_if_present(fs, backup)
        sync_dirs(fs, backups)
    journals.remove(fs, journal)
