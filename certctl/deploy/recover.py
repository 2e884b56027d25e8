"""Crash recovery: bring every destination of an unfinished deploy to one whole version.

``decide`` is the pure rule, over the journal and what is observed on disk:

- a committed journal rolls forward: the new files are live, only cleanup is left;
- otherwise roll back: a destination holding the new bytes (or the old bytes with the new
  mode or owner) gets its backup restored, a destination the deploy created is removed, and
  one already as before is left alone. Anything else (content from neither version, a
  backup missing or damaged) is a conflict: we stop and ask for a human rather than guess.

Recovery reloads the target only when it changed a live file: if it changed nothing, the
server was never pointed at a different set of files by this deploy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from certctl.deploy import metrics
from certctl.deploy.errors import RollbackFailed
from certctl.deploy.journal import Journal, Snapshot
from certctl.deploy.run import CommandFailed
from certctl.deploy.steps import Tools, observe, settle, sha256, undo


class Action(StrEnum):
    KEEP = "keep"
    RESTORE = "restore"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Observation:
    """``live``: the destination now (``None`` if absent); ``backup_sha256``: ``None`` if absent."""

    live: Snapshot | None
    backup_sha256: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    forward: bool
    actions: Mapping[str, Action]
    conflicts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``recover`` did for one journal; ``settled`` is false if its cleanup failed."""

    journal: str
    forward: bool
    restored: tuple[str, ...]
    removed: tuple[str, ...]
    reload_error: str | None
    warnings: tuple[str, ...]
    settled: bool


def decide(journal: Journal, observed: Mapping[str, Observation]) -> Decision:
    if journal.committed:
        return Decision(True, {e.path: Action.KEEP for e in journal.entries}, ())
    actions: dict[str, Action] = {}
    conflicts: list[str] = []
    for entry in journal.entries:
        seen = observed[entry.path]
        live = seen.live
        if live == entry.old:
            actions[entry.path] = Action.KEEP
        elif entry.old is None:
            if live is not None and live.sha256 == entry.new_sha256:
                actions[entry.path] = Action.REMOVE
            else:
                conflicts.append(f"{entry.path} was created by this deploy but holds other bytes")
        elif live is None or live.sha256 not in (entry.new_sha256, entry.old.sha256):
            conflicts.append(f"{entry.path} holds bytes from neither the old nor the new version")
        elif seen.backup_sha256 != entry.old.sha256:
            conflicts.append(f"backup {entry.backup} is missing or does not hold the old bytes")
        else:
            actions[entry.path] = Action.RESTORE
    return Decision(False, actions, tuple(conflicts))


def observe_journal(tools: Tools, journal: Journal) -> dict[str, Observation]:
    observed = {}
    for entry in journal.entries:
        backup_sha: str | None = None
        if entry.backup is not None:
            try:
                backup_sha = sha256(tools.fs.read(entry.backup))
            except FileNotFoundError:
                backup_sha = None
        observed[entry.path] = Observation(observe(tools.fs, entry.path), backup_sha)
    return observed


def recover_journal(tools: Tools, journal: Journal) -> Recovery:
    """Apply ``decide``; the caller holds the locks of every path the journal names."""
    try:
        observed = {} if journal.committed else observe_journal(tools, journal)
    except OSError as exc:
        raise _unfinished(journal, exc) from exc
    decision = decide(journal, observed)
    if decision.conflicts:
        raise RollbackFailed(
            f"cannot recover deploy journal {journal.path}: {'; '.join(decision.conflicts)}; "
            "restore these files by hand from their backups, then delete the journal.",
            journal.backup_paths,
            journal.path,
        )
    changed = [e for e in journal.entries if decision.actions[e.path] is not Action.KEEP]
    try:
        warnings = undo(tools, changed)
    except OSError as exc:
        metrics.ROLLBACKS.labels(journal.target_type, "also_failed").inc()
        raise _unfinished(journal, exc) from exc
    reload_error = None
    if changed:
        if journal.reload is not None:
            try:
                tools.runner.run(journal.reload, journal.hook_timeout)
            except CommandFailed as exc:
                reload_error = str(exc)
        outcome = "restored" if reload_error is None else "also_failed"
        metrics.ROLLBACKS.labels(journal.target_type, outcome).inc()
    settled = True
    try:
        settle(tools.fs, journal, decision.forward)
    except OSError as exc:
        settled = False
        warnings.append(
            f"cleanup after recovering {journal.path} failed at {exc.filename}: {exc.strerror}; "
            "the journal stays and the next recovery retries."
        )
    return Recovery(
        journal=journal.path,
        forward=decision.forward,
        restored=tuple(e.path for e in changed if e.old is not None),
        removed=tuple(e.path for e in changed if e.old is None),
        reload_error=reload_error,
        warnings=tuple(warnings),
        settled=settled,
    )


def _unfinished(journal: Journal, exc: OSError) -> RollbackFailed:
    return RollbackFailed(
        f"recovering deploy journal {journal.path} failed at {exc.filename} ({exc.strerror}); "
        "fix the cause and run recovery again (the agent does at start).",
        journal.backup_paths,
        journal.path,
    )
