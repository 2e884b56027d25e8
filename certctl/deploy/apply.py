"""The engine: apply a plan all-or-nothing, verify it, recover after crashes.

Order of one deploy (every step through ``FileSystem``/``Runner``):

1. pure checks: plan shape, staged material (parses, key matches, chain order, not
   expired), owner names; nothing touched yet;
2. lock every destination (sorted), settle any unfinished journal on these paths, sweep
   stale temps, read the live files; if every one already holds the planned bytes, stop;
3. journal the intent (fsynced, directory fsynced) before creating anything;
4. back up existing files and write the temps (ownership applied, then fsync), then fsync
   the directories so the backups survive a power cut before any live file changes;
5. validate command; renames; directory fsync; reload command; verification;
6. commit mark (journal renamed), then prune backups, sweep temps, remove the journal.

A failure in 5 restores the renamed files from their backups (and reloads after a reload
or verify failure); only a file that did not exist before is ever removed.

``apply`` is synchronous because every step is a blocking call and a stateful property
test then needs no event loop; ``deploy`` runs it in a worker thread and calls the async
TLS verifier back on the trio thread, so the locks span verification and rollback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import NoReturn

import trio
from cryptography import x509

from certctl.core.clock import Clock, SystemClock
from certctl.deploy import journal as journals
from certctl.deploy import metrics
from certctl.deploy.errors import (
    ApplyFailed,
    DeployError,
    PlanInvalid,
    RecoveryPending,
    ReloadFailed,
    RollbackFailed,
    ValidateFailed,
    VerifyFailed,
)
from certctl.deploy.fs import FileSystem, OsFileSystem
from certctl.deploy.journal import Entry, Journal, JournalUnreadable, Snapshot
from certctl.deploy.locks import PathLocks
from certctl.deploy.material import check_material
from certctl.deploy.names import backup_path, stamp, temp_path
from certctl.deploy.ownership import Ids, Ownership, apply_ownership, lookup_ids, resolve_ownership
from certctl.deploy.plan import Handshake, Plan, Result, check_plan
from certctl.deploy.recover import Recovery, recover_journal
from certctl.deploy.run import CommandFailed, Runner, SubprocessRunner
from certctl.deploy.steps import Tools, settle, sha256, sweep_temps, sync_dirs, undo
from certctl.deploy.verify import Verifier

VerifyStep = Callable[[x509.Certificate], Handshake]


class Engine:
    """Applies plans and recovers unfinished deploys kept in one state directory.

    All engines in a process share the in-process path locks; the flock files in
    ``state_dir`` keep out other processes that use the same state directory.
    """

    def __init__(
        self,
        state_dir: str,
        *,
        fs: FileSystem | None = None,
        runner: Runner | None = None,
        clock: Clock | None = None,
        privileged: bool | None = None,
    ) -> None:
        self._state_dir = os.path.abspath(state_dir)
        os.makedirs(self._state_dir, mode=0o700, exist_ok=True)
        self._tools = Tools(
            fs=fs or OsFileSystem(),
            runner=runner or SubprocessRunner(),
            privileged=os.geteuid() == 0 if privileged is None else privileged,
        )
        self._clock = clock or SystemClock()
        self._locks = PathLocks(os.path.join(self._state_dir, "locks"))

    @property
    def state_dir(self) -> str:
        return self._state_dir

    def apply(self, plan: Plan, verify: VerifyStep | None = None) -> Result:
        """Deploy ``plan``; ``verify`` (given the leaf) runs after the reload, under the locks."""
        started = time.perf_counter()
        try:
            result = self._apply(plan, verify)
        except DeployError as exc:
            elapsed = time.perf_counter() - started
            metrics.ATTEMPTS.labels(plan.target_type, "failure").inc()
            metrics.DURATION.labels(plan.target_type).observe(elapsed)
            if exc.result is not None:
                exc.result = replace(exc.result, duration=elapsed)
            raise
        elapsed = time.perf_counter() - started
        metrics.ATTEMPTS.labels(plan.target_type, "success").inc()
        metrics.DURATION.labels(plan.target_type).observe(elapsed)
        return replace(result, duration=elapsed)

    async def deploy(self, plan: Plan, verifier: Verifier | None = None) -> Result:
        """``apply`` in a worker thread, verifying through ``verifier`` on the trio thread.

        Not cancellable midway: a deploy is the unit of work that shutdown lets finish, and
        every step in it is bounded (hook timeouts, verifier attempts).
        """
        verify: VerifyStep | None = None
        if verifier is not None:
            bound = verifier

            def verify(leaf: x509.Certificate) -> Handshake:
                verified: Handshake = trio.from_thread.run(bound.verify, leaf)
                return verified

        result: Result = await trio.to_thread.run_sync(self.apply, plan, verify)
        return result

    def recover(self, path: str | None = None) -> list[Recovery]:
        """Finish or undo unfinished deploys: every journal in the state directory, or one.

        Run at agent start, before deploys begin: half-written journals (from a crash while
        publishing one) are deleted, which would fail a deploy publishing at that moment.
        """
        fs = self._tools.fs
        target = os.path.abspath(path or self._state_dir)
        if journals.is_journal_name(os.path.basename(target)):
            candidates = [target]
        else:
            candidates, partial = journals.scan(fs, target)
            for leftover in partial:
                fs.remove(leftover)
        recoveries = []
        for candidate in candidates:
            journal = self._load(candidate)
            if journal is None:
                continue
            with self._locks.hold(journal.paths):
                current = self._load(journal.path) or self._load(
                    replace(journal, committed=True).path
                )
                if current is not None:
                    recoveries.append(recover_journal(self._tools, current))
        return recoveries

    def _load(self, path: str) -> Journal | None:
        try:
            return journals.load(self._tools.fs, path)
        except FileNotFoundError:
            return None  # finished while we looked
        except JournalUnreadable as exc:
            raise RollbackFailed(str(exc), {}, path) from exc

    def _apply(self, plan: Plan, verify: VerifyStep | None) -> Result:
        check_plan(plan)
        try:
            leaf = check_material(plan.files, self._clock.now())
        except ValidateFailed:
            metrics.VALIDATE_FAILURES.labels(plan.target_type).inc()
            raise
        if verify is not None and leaf is None:
            raise PlanInvalid(
                "a verifier was given but no file has role cert, fullchain or combined; "
                "set the role of the certificate file."
            )
        ids = [lookup_ids(f.owner, f.group, f.path) for f in plan.files]
        default_ids = lookup_ids(plan.defaults.owner, plan.defaults.group, "the defaults")
        with self._locks.hold(f.path for f in plan.files):
            warnings = self._settle_pending(plan)
            run = _Deploy(
                tools=self._tools,
                state_dir=self._state_dir,
                plan=plan,
                ids=ids,
                default_ids=default_ids,
                warnings=warnings,
            )
            return run.run(leaf, verify)

    def _settle_pending(self, plan: Plan) -> list[str]:
        """Finish journals left on our paths (by a crash, a failed cleanup or rollback).

        Safe because we hold the locks of all their paths: no deploy is running on them.
        """
        ours = frozenset(f.path for f in plan.files)
        pending = []
        try:
            found, _ = journals.scan(self._tools.fs, self._state_dir)
        except OSError as exc:
            raise ApplyFailed(
                f"listing deploy journals in {self._state_dir} failed ({exc.strerror}); "
                "fix the state directory's permissions or disk."
            ) from exc
        for candidate in found:
            try:
                journal = self._load(candidate)
            except OSError as exc:
                raise ApplyFailed(
                    f"reading deploy journal {candidate} failed ({exc.strerror}); "
                    "fix the state directory's permissions or disk."
                ) from exc
            if journal is not None and journal.paths & ours:
                if not journal.paths <= ours:
                    raise RecoveryPending(
                        f"unfinished deploy journal {journal.path} also covers "
                        f"{', '.join(sorted(journal.paths - ours))}; run recovery (the agent "
                        "does at start) before deploying here."
                    )
                pending.append(journal)
        warnings: list[str] = []
        for journal in pending:
            recovery = recover_journal(self._tools, journal)
            if not recovery.settled:
                # Deploying over a journal that stays would let a later recovery act on
                # files this deploy wrote: never proceed while one remains.
                raise ApplyFailed(
                    f"could not finish unfinished deploy journal {journal.path} "
                    f"({'; '.join(recovery.warnings)}); fix the disk, then redeploy."
                )
            warnings.extend(recovery.warnings)
            if recovery.reload_error is not None:
                warnings.append(f"reload after recovering {journal.path}: {recovery.reload_error}")
        return warnings


class _Deploy:
    """One run of ``apply`` with the locks held."""

    def __init__(
        self,
        *,
        tools: Tools,
        state_dir: str,
        plan: Plan,
        ids: list[Ids | None],
        default_ids: Ids | None,
        warnings: list[str],
    ) -> None:
        self._tools = tools
        self._fs = tools.fs
        self._state_dir = state_dir
        self._plan = plan
        self._ids = ids
        self._default_ids = default_ids
        self._warnings = warnings
        self._validated = False

    def run(self, leaf: x509.Certificate | None, verify: VerifyStep | None) -> Result:
        plan, fs = self._plan, self._fs
        try:
            sweep_temps(fs, [f.path for f in plan.files])
            current = [self._read(f.path) for f in plan.files]
        except OSError as exc:
            raise ApplyFailed(_io("preparing", exc)) from exc
        hashes = [sha256(f.data) for f in plan.files]
        if not plan.skip_idempotent and all(
            data is not None and sha256(data) == digest
            for data, digest in zip(current, hashes, strict=True)
        ):
            metrics.IDEMPOTENT_SKIPS.labels(plan.target_type).inc()
            return Result(plan.target_type, skipped_as_idempotent=True, warnings=self._notes())
        journal, ownerships = self._begin(current, hashes)
        self._stage(journal, current, ownerships)
        self._validate(journal)
        self._commit_files(journal)
        reloaded = self._reload(journal)
        verification = None
        if verify is not None and leaf is not None:
            try:
                verification = verify(leaf)
            except VerifyFailed as exc:
                metrics.POST_VERIFY_FAILURES.labels(plan.target_type).inc()
                self._roll_back(journal, journal.entries, VerifyFailed, f"{exc}", reloaded)
        journal = self._mark_committed(journal, reloaded)
        try:
            settle(fs, journal, forward=True)
        except OSError as exc:
            self._warnings.append(_io("cleaning up after the deploy", exc, later=True))
        return self._result(journal, reloaded=reloaded, verification=verification)

    def _read(self, path: str) -> bytes | None:
        try:
            return self._fs.read(path)
        except FileNotFoundError:
            return None

    def _begin(
        self, current: list[bytes | None], hashes: list[str]
    ) -> tuple[Journal, list[Ownership]]:
        plan, fs = self._plan, self._fs
        when = stamp()
        entries, ownerships = [], []
        try:
            for item, data, digest, ids in zip(plan.files, current, hashes, self._ids, strict=True):
                st = fs.stat(item.path) if data is not None else None
                old = None
                if data is not None and st is not None:
                    old = Snapshot(sha256(data), st.mode, st.uid, st.gid)
                ownerships.append(
                    resolve_ownership(item.mode, ids, plan.defaults.mode, self._default_ids, st)
                )
                entries.append(
                    Entry(
                        path=item.path,
                        temp=temp_path(item.path, when),
                        backup=None if old is None else backup_path(item.path, when),
                        new_sha256=digest,
                        old=old,
                    )
                )
            journal = Journal(
                stamp=when,
                state_dir=self._state_dir,
                target_type=plan.target_type,
                keep_backups=plan.backups_to_keep,
                reload=plan.reload,
                hook_timeout=plan.hook_timeout,
                entries=tuple(entries),
            )
            journals.write(fs, journal)
        except OSError as exc:
            raise ApplyFailed(_io("writing the deploy journal", exc)) from exc
        return journal, ownerships

    def _stage(
        self, journal: Journal, current: list[bytes | None], ownerships: list[Ownership]
    ) -> None:
        fs = self._fs
        try:
            for entry, data in zip(journal.entries, current, strict=True):
                if entry.backup is not None and data is not None:
                    fs.create(entry.backup, data)
                    fs.fsync(entry.backup)
            for entry, item, ownership in zip(
                journal.entries, self._plan.files, ownerships, strict=True
            ):
                fs.create(entry.temp, item.data)
                warning = apply_ownership(fs, entry.temp, ownership, self._tools.privileged)
                if warning is not None:
                    self._warnings.append(warning)
                fs.fsync(entry.temp)
            sync_dirs(fs, [e.backup for e in journal.entries if e.backup is not None])
        except OSError as exc:
            self._abandon(journal)
            raise ApplyFailed(_io("staging", exc), self._result(journal)) from exc

    def _validate(self, journal: Journal) -> None:
        plan = self._plan
        if plan.validate is not None:
            try:
                self._tools.runner.run(plan.validate, plan.hook_timeout)
            except CommandFailed as exc:
                metrics.VALIDATE_FAILURES.labels(plan.target_type).inc()
                self._abandon(journal)
                raise ValidateFailed(
                    f"validate command failed: {exc}; fix the target's configuration, "
                    "then redeploy.",
                    self._result(journal),
                ) from exc
        self._validated = True

    def _commit_files(self, journal: Journal) -> None:
        renamed: list[Entry] = []
        try:
            for entry in journal.entries:
                self._fs.rename(entry.temp, entry.path)
                renamed.append(entry)
            sync_dirs(self._fs, journal.paths)
        except OSError as exc:
            self._roll_back(journal, renamed, ApplyFailed, _io("replacing files", exc), False)

    def _reload(self, journal: Journal) -> bool:
        plan = self._plan
        if plan.reload is None:
            return False
        try:
            self._tools.runner.run(plan.reload, plan.hook_timeout)
        except CommandFailed as exc:
            metrics.RELOAD_FAILURES.labels(plan.target_type).inc()
            cause = f"reload command failed: {exc}"
            self._roll_back(journal, journal.entries, ReloadFailed, cause, True)
        return True

    def _mark_committed(self, journal: Journal, reloaded: bool) -> Journal:
        """Rename the journal: the commit point. Before it, recovery rolls back.

        If the rename lands but the directory fsync fails, either name may survive a power
        cut and both lead recovery to a consistent set, so the deploy stands.
        """
        committed = replace(journal, committed=True)
        try:
            self._fs.rename(journal.path, committed.path)
        except OSError as exc:
            self._roll_back(journal, journal.entries, ApplyFailed, _io("committing", exc), reloaded)
        try:
            self._fs.fsync_dir(self._state_dir)
        except OSError as exc:
            self._warnings.append(_io("syncing the commit mark", exc, later=True))
        return committed

    def _roll_back(
        self,
        journal: Journal,
        entries: tuple[Entry, ...] | list[Entry],
        error: type[DeployError],
        cause: str,
        reload: bool,
    ) -> NoReturn:
        plan = self._plan
        if entries:
            try:
                self._warnings.extend(undo(self._tools, entries))
            except OSError as exc:
                metrics.ROLLBACKS.labels(plan.target_type, "also_failed").inc()
                raise RollbackFailed(
                    f"{cause}; restoring the previous files then failed at {exc.filename} "
                    f"({exc.strerror}); fix that and run recovery (the agent does at start).",
                    journal.backup_paths,
                    journal.path,
                    self._result(journal),
                ) from exc
            if reload and plan.reload is not None:
                try:
                    self._tools.runner.run(plan.reload, plan.hook_timeout)
                except CommandFailed as exc:
                    metrics.ROLLBACKS.labels(plan.target_type, "also_failed").inc()
                    raise RollbackFailed(
                        f"{cause}; the previous files are back but reloading them failed too "
                        f"({exc.reason}); fix the reload command and reload the service by hand.",
                        journal.backup_paths,
                        journal.path,
                        self._result(journal),
                    ) from exc
            metrics.ROLLBACKS.labels(plan.target_type, "restored").inc()
        self._abandon(journal)
        rolled_back = bool(entries)
        raise error(
            f"{cause}; the previous files are in place"
            + (" and reloaded." if rolled_back and reload and plan.reload else "."),
            self._result(journal, rolled_back=rolled_back),
        )

    def _abandon(self, journal: Journal) -> None:
        """Clean up after a failure once the live files are as before."""
        try:
            settle(self._fs, journal, forward=False)
        except OSError as exc:
            self._warnings.append(_io("cleaning up after the failure", exc, later=True))

    def _result(
        self,
        journal: Journal,
        *,
        reloaded: bool = False,
        rolled_back: bool = False,
        verification: Handshake | None = None,
    ) -> Result:
        return Result(
            target_type=self._plan.target_type,
            backup_paths=journal.backup_paths,
            validated=self._validated,
            reloaded=reloaded,
            rolled_back=rolled_back,
            verification=verification,
            warnings=self._notes(),
        )

    def _notes(self) -> tuple[str, ...]:
        return tuple(self._warnings)


def _io(step: str, exc: OSError, *, later: bool = False) -> str:
    where = f" at {exc.filename}" if exc.filename else ""
    fix = (
        "the journal stays and the next deploy or recovery finishes it"
        if later
        else "fix the disk or permissions, then redeploy"
    )
    return f"{step} failed{where} ({exc.strerror or exc}); {fix}"
