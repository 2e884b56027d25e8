"""Stateful fault injection against the deploy engine on a real directory.

Each example deploys a random sequence of versions of 1-4 files (split over two
directories, random existing modes and owners, random retention) and injects, at a random
step of a deploy, an I/O error (EIO, ENOSPC, EPERM, EXDEV), a process crash or a power cut
(``certctl.testing.faults``), plus random validate, reload and verify failures. After a
crash a fresh engine (a new process on the same disk) runs ``recover()``, which may itself
crash once more before a final recovery.

The model knows the exact expected state: after a success every file is the new version
with the mode and owner the precedence rules give; after a failure every file (bytes,
mode, owner) is as before; after a crash and recovery it is exactly one of the two.

Only giving files to other owners needs root: ``TestDeployStateful`` runs for anyone with
the files owned by the running user, and ``TestDeployStatefulOwnership`` (root only) draws
owners from four uid/gid pairs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime

import pytest
from cryptography import x509
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from certctl.connectors.targets.base import Material
from certctl.deploy import (
    DeployError,
    Engine,
    File,
    FileDefaults,
    FileRole,
    Handshake,
    Plan,
    RollbackFailed,
    VerifyFailed,
)
from certctl.deploy.names import BACKUP_MARK, TEMP_MARK, backups_of
from certctl.testing.faults import Fault, FaultyFileSystem, ScriptedRunner, SimulatedCrash
from certctl.testing.material import ScratchCA

ISSUER = ScratchCA("stateful")
GOOD = {f"v{n}": ISSUER.issue(f"v{n}.example") for n in range(4)}
_expired = ISSUER.issue("expired.example", expired=True)
# Material the engine must refuse before touching any file: an expired leaf, and a leaf
# paired with another version's key.
BAD = {
    "expired": _expired,
    "mismatched": Material(GOOD["v0"].cert_pem, GOOD["v0"].chain_pem, GOOD["v1"].key_pem),
}
VERSIONS = {**GOOD, **BAD}

LAYOUTS = {
    1: (("site.pem", FileRole.COMBINED),),
    2: (("fullchain.pem", FileRole.FULLCHAIN), ("key.pem", FileRole.KEY)),
    3: (("cert.pem", FileRole.CERT), ("chain.pem", FileRole.CHAIN), ("key.pem", FileRole.KEY)),
    4: (
        ("cert.pem", FileRole.CERT),
        ("chain.pem", FileRole.CHAIN),
        ("fullchain.pem", FileRole.FULLCHAIN),
        ("key.pem", FileRole.KEY),
    ),
}
MODES = (0o600, 0o640, 0o644, 0o400)
OWNERS = ((0, 0), (1000, 1000), (1000, 0), (65534, 65534))
# Owners are drawn as indices into the machine's ``owners``, so one rule set serves both
# the machine that keeps the running user's ids and the one that gives files away.
owner_index = st.integers(0, len(OWNERS) - 1)
VALIDATE = ("validate-config",)
RELOAD = ("reload-service",)

FileState = tuple[bytes, int, int, int] | None
State = tuple[FileState, ...]


def content(material: Material, role: FileRole) -> bytes:
    return {
        FileRole.COMBINED: material.combined,
        FileRole.FULLCHAIN: material.fullchain,
        FileRole.CERT: material.cert_pem,
        FileRole.CHAIN: material.chain_pem,
        FileRole.KEY: material.key_pem,
    }[role]


@dataclass(frozen=True)
class FixedClock:
    instant: datetime

    def now(self) -> datetime:
        return self.instant


faults = st.one_of(
    st.none(),
    st.builds(
        Fault,
        at=st.integers(0, 60),
        errno=st.sampled_from([None, errno.EIO, errno.ENOSPC, errno.EPERM, errno.EXDEV]),
        power_cut=st.booleans(),
    ),
)
ownership = st.one_of(st.none(), owner_index)


class DeployMachine(RuleBasedStateMachine):
    owners: tuple[tuple[int, int], ...] = ((os.geteuid(), os.getegid()),)

    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="certctl-deploy-")
        self.state_dir = os.path.join(self.root, "state")
        self.dirs = [os.path.join(self.root, "a"), os.path.join(self.root, "b")]
        for directory in (self.state_dir, *self.dirs):
            os.mkdir(directory)
        self.paths: list[str] = []
        self.roles: list[FileRole] = []
        self.keep = 0
        self.retention = 0
        self.fs = FaultyFileSystem([self.state_dir, *self.dirs])
        self.state: State = ()
        self.previous: State = ()
        self.versions: set[tuple[bytes | None, ...]] = set()
        self.outcome = "none"
        # True while an injected error may have left cleanup for the next deploy to finish.
        self.dirty = False
        self.deployed: Material | None = None

    def teardown(self) -> None:
        shutil.rmtree(self.root)

    # -- set-up -----------------------------------------------------------------------

    @initialize(
        layout=st.sampled_from(sorted(LAYOUTS)),
        placement=st.lists(st.integers(0, 1), min_size=4, max_size=4),
        initial=st.lists(
            st.tuples(st.booleans(), st.sampled_from(MODES), owner_index),
            min_size=4,
            max_size=4,
        ),
        start=st.sampled_from(sorted(GOOD)),
        retention=st.sampled_from([-1, 0, 1, 2]),
    )
    def setup(
        self,
        layout: int,
        placement: list[int],
        initial: list[tuple[bool, int, int]],
        start: str,
        retention: int,
    ) -> None:
        files = LAYOUTS[layout]
        self.paths = [
            os.path.join(self.dirs[d], name) for (name, _), d in zip(files, placement, strict=False)
        ]
        self.roles = [role for _, role in files]
        self.retention = retention
        self.keep = 3 if retention == 0 else max(retention, 0)
        existing = zip(self.paths, self.roles, initial, strict=False)
        for path, role, (exists, mode, owner) in existing:
            if exists:
                uid, gid = self.owner(owner)
                with open(path, "wb") as handle:
                    handle.write(content(GOOD[start], role))
                os.chown(path, uid, gid)
                os.chmod(path, mode)
        self.fs = FaultyFileSystem([self.state_dir, *self.dirs])
        self.state = self.observe()
        self.previous = self.state
        self.versions = {self.contents(self.state)}
        if all(s is not None for s in self.state):
            self.deployed = GOOD[start]

    # -- helpers ----------------------------------------------------------------------

    def owner(self, index: int | None) -> tuple[int, int] | None:
        return None if index is None else self.owners[index % len(self.owners)]

    def observe(self) -> State:
        result: list[FileState] = []
        for path in self.paths:
            try:
                st_ = os.stat(path)
            except FileNotFoundError:
                result.append(None)
                continue
            with open(path, "rb") as handle:
                result.append((handle.read(), st_.st_mode & 0o7777, st_.st_uid, st_.st_gid))
        return tuple(result)

    @staticmethod
    def contents(state: State) -> tuple[bytes | None, ...]:
        return tuple(None if s is None else s[0] for s in state)

    def plan(
        self,
        material: Material,
        modes: list[int | None],
        owners: list[int | None],
        defaults: tuple[int | None, int | None],
        hooks: tuple[bool, bool],
    ) -> Plan:
        files = []
        for path, role, mode, index in zip(self.paths, self.roles, modes, owners, strict=False):
            owner = self.owner(index)
            user, group = (None, None) if owner is None else (str(owner[0]), str(owner[1]))
            files.append(File(path, content(material, role), role, mode, user, group))
        default_mode, default_index = defaults
        default_owner = self.owner(default_index)
        return Plan(
            files=tuple(files),
            defaults=FileDefaults(
                default_mode,
                None if default_owner is None else str(default_owner[0]),
                None if default_owner is None else str(default_owner[1]),
            ),
            validate=VALIDATE if hooks[0] else None,
            reload=RELOAD if hooks[1] else None,
            backup_retention=self.retention,
            target_type="stateful",
        )

    def expected_success(self, plan: Plan) -> State:
        """Explicit beats existing beats defaults; owner and group as a pair; else 0600/us."""
        out: list[FileState] = []
        for item, now in zip(plan.files, self.state, strict=False):
            mode = item.mode
            if mode is None:
                mode = now[1] if now is not None else plan.defaults.mode
            ids: tuple[int, int] | None = None
            if item.owner is not None and item.group is not None:
                ids = (int(item.owner), int(item.group))
            elif now is not None:
                ids = (now[2], now[3])
            elif plan.defaults.owner is not None and plan.defaults.group is not None:
                ids = (int(plan.defaults.owner), int(plan.defaults.group))
            uid, gid = ids if ids is not None else (os.geteuid(), os.getegid())
            out.append((item.data, 0o600 if mode is None else mode, uid, gid))
        return tuple(out)

    def engine(self, runner: ScriptedRunner) -> Engine:
        return Engine(
            self.state_dir,
            fs=self.fs,
            runner=runner,
            clock=FixedClock(ISSUER.now),
        )

    def recover(self, crash_at: int | None) -> None:
        """A new agent process starts and recovers; it may die once more while doing so."""
        if crash_at is not None:
            plan = self.fs.arm(Fault(crash_at, power_cut=crash_at % 2 == 0))
            with contextlib.suppress(SimulatedCrash):
                self.engine(ScriptedRunner(plan)).recover()
        plan = self.fs.arm(None)
        self.engine(ScriptedRunner(plan)).recover()
        self.dirty = False

    def leftovers(self) -> list[str]:
        temps = [n for d in self.dirs for n in os.listdir(d) if TEMP_MARK in n]
        journals = [n for n in os.listdir(self.state_dir) if n != "locks"]
        return temps + journals

    # -- rules ------------------------------------------------------------------------

    @rule(
        version=st.sampled_from(sorted(VERSIONS)),
        modes=st.lists(st.one_of(st.none(), st.sampled_from(MODES)), min_size=4, max_size=4),
        owners=st.lists(ownership, min_size=4, max_size=4),
        defaults=st.tuples(st.one_of(st.none(), st.sampled_from(MODES)), ownership),
        hooks=st.tuples(st.booleans(), st.booleans()),
        validate_fails=st.booleans(),
        reload_fails=st.sampled_from([0, 0, 1, 2]),
        verify_fails=st.booleans(),
        fault=faults,
        recovery_crash=st.one_of(st.none(), st.integers(0, 30)),
    )
    def deploy(
        self,
        *,
        version: str,
        modes: list[int | None],
        owners: list[int | None],
        defaults: tuple[int | None, int | None],
        hooks: tuple[bool, bool],
        validate_fails: bool,
        reload_fails: int,
        verify_fails: bool,
        fault: Fault | None,
        recovery_crash: int | None,
    ) -> None:
        material = VERSIONS[version]
        plan = self.plan(material, modes, owners, defaults, hooks)
        expected = self.expected_success(plan)
        faults_ = self.fs.arm(fault)
        runner = ScriptedRunner(faults_)
        if validate_fails:
            runner.fail(VALIDATE)
        runner.fail(RELOAD, times=reload_fails)

        def verify(leaf: x509.Certificate) -> Handshake:
            try:
                faults_.step("verify", "endpoint")
            except OSError as exc:  # as TLSVerifier reports an unreachable endpoint
                raise VerifyFailed(f"handshake failed: {exc}") from exc
            if verify_fails:
                raise VerifyFailed("scripted: the endpoint served another certificate")
            return Handshake("endpoint:443", None, "TLS 1.3", "f", "CN=x", ISSUER.now, 1)

        self.previous = self.state
        skipped = False
        try:
            skipped = self.engine(runner).apply(plan, verify).skipped_as_idempotent
            self.outcome = "success"
        except SimulatedCrash:
            self.outcome = "crash"
            self.recover(recovery_crash)
        except RollbackFailed:
            self.outcome = "rollback-failed"
            self.recover(None)
        except DeployError:
            self.outcome = "failure"
        event(f"outcome: {self.outcome}")
        if faults_.fired is not None and fault is not None:
            kind = "error" if fault.errno is not None else "crash"
            if kind == "crash" and fault.power_cut:
                kind = "power cut"
            event(f"{kind} at {faults_.fired[0]}")
        now = self.observe()
        if self.outcome == "success":
            assert now == (self.previous if skipped else expected)
        elif self.outcome == "crash":
            assert now in (self.previous, expected), "recovery left neither version"
        else:
            assert now == self.previous, "a failed deploy changed the live files"
        self.state = now
        if now == expected:
            self.versions.add(self.contents(now))
            self.deployed = material
        # The engine settles leftovers whenever it gets past its pure checks; it cannot if
        # the material is refused first, and an injected error may leave new ones.
        if faults_.fired is not None and faults_.fired[0] != "verify" and fault is not None:
            self.dirty = self.dirty or fault.errno is not None
        elif version in GOOD and self.outcome != "crash":
            self.dirty = False

    @rule(hooks=st.tuples(st.booleans(), st.booleans()))
    def redeploy_identical(self, hooks: tuple[bool, bool]) -> None:
        """Redeploy what is live, with hooks that would fail if run: nothing may run."""
        if self.deployed is None or self.contents(self.state) != tuple(
            content(self.deployed, role) for role in self.roles
        ):
            return  # the live files are not one plan's output (initial partial state)
        event("identical redeploy checked")
        runner = ScriptedRunner(self.fs.arm(None))
        runner.fail(VALIDATE)
        runner.fail(RELOAD)
        plan = self.plan(self.deployed, [None] * 4, [None] * 4, (None, None), hooks)
        result = self.engine(runner).apply(plan)
        assert result.skipped_as_idempotent
        assert runner.calls == [], "an identical redeploy ran a hook"
        assert self.observe() == self.state
        self.dirty = False

    @rule()
    def agent_restart(self) -> None:
        self.recover(None)
        assert self.observe() == self.state

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def each_destination_is_one_whole_version(self) -> None:
        now = self.contents(self.observe())
        for index, data in enumerate(now):
            assert data in {v[index] for v in self.versions}, f"{self.paths[index]} is torn"

    @invariant()
    def all_destinations_are_from_one_version(self) -> None:
        assert self.contents(self.observe()) in self.versions, "files from different versions"

    @invariant()
    def failure_leaves_the_previous_version(self) -> None:
        if self.outcome in ("failure", "rollback-failed"):
            assert self.observe() == self.previous

    @invariant()
    def nothing_left_over_once_settled(self) -> None:
        if not self.dirty:
            assert self.leftovers() == [], "temp files or journals left behind"

    @invariant()
    def backups_within_retention(self) -> None:
        if self.dirty:
            return
        for path in self.paths:
            names = os.listdir(os.path.dirname(path))
            assert len(backups_of(path, names)) <= self.keep, f"too many backups of {path}"
        for directory in self.dirs:
            for name in os.listdir(directory):
                if BACKUP_MARK in name:
                    assert any(name.startswith(os.path.basename(p)) for p in self.paths)


class OwnershipMachine(DeployMachine):
    """The same machine, giving files to other owners: root only."""

    owners = OWNERS


TestDeployStateful = DeployMachine.TestCase
TestDeployStateful.settings = settings(stateful_step_count=12)
TestDeployStatefulOwnership = pytest.mark.skipif(
    os.geteuid() != 0, reason="gives files to other owners; run as root (CI does)"
)(OwnershipMachine.TestCase)
TestDeployStatefulOwnership.settings = settings(stateful_step_count=12)
