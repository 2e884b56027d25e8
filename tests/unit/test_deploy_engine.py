"""Engine behaviour on a real disk: the semantics kept from the reference and its fixes."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from certctl.connectors.targets.base import Material
from certctl.deploy import (
    ApplyFailed,
    Engine,
    File,
    FileDefaults,
    FileRole,
    Plan,
    PlanInvalid,
    RecoveryPending,
    ReloadFailed,
    RollbackFailed,
    ValidateFailed,
)
from certctl.deploy.names import STAMP_DIGITS, backups_of, stamp
from certctl.testing.faults import (
    Fault,
    FaultPlan,
    FaultyFileSystem,
    ScriptedRunner,
    SimulatedCrash,
)
from certctl.testing.material import ScratchCA

ISSUER = ScratchCA()
as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="gives files to other owners; run as root (CI does)"
)
V1, V2, V3 = (ISSUER.issue(f"v{n}.example") for n in (1, 2, 3))
RELOAD = ("reload-service",)
VALIDATE = ("validate-config",)


def two_files(directory: Path, material: Material, **plan: object) -> Plan:
    return Plan(
        files=(
            File(str(directory / "cert.pem"), material.fullchain, FileRole.FULLCHAIN),
            File(str(directory / "key.pem"), material.key_pem, FileRole.KEY),
        ),
        **plan,  # type: ignore[arg-type]
    )


def live(directory: Path) -> tuple[bytes | None, bytes | None]:
    def read(name: str) -> bytes | None:
        path = directory / name
        return path.read_bytes() if path.exists() else None

    return read("cert.pem"), read("key.pem")


def leftovers(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if ".certctl-tmp." in n)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "site").mkdir()
    return tmp_path / "site"


@pytest.fixture
def runner() -> ScriptedRunner:
    return ScriptedRunner()


@pytest.fixture
def engine(tmp_path: Path, runner: ScriptedRunner) -> Engine:
    return Engine(str(tmp_path / "state"), runner=runner)


def test_apply_writes_every_file_runs_hooks_once_and_skips_an_identical_redeploy(
    site: Path, engine: Engine, runner: ScriptedRunner
) -> None:
    result = engine.apply(two_files(site, V1, validate=VALIDATE, reload=RELOAD))
    assert live(site) == (V1.fullchain, V1.key_pem)
    assert (result.validated, result.reloaded, result.rolled_back) == (True, True, False)
    assert runner.calls == [VALIDATE, RELOAD]
    again = engine.apply(two_files(site, V1, validate=VALIDATE, reload=RELOAD))
    assert again.skipped_as_idempotent
    assert again.backup_paths == {}
    assert runner.calls == [VALIDATE, RELOAD]
    forced = engine.apply(two_files(site, V1, reload=RELOAD, skip_idempotent=True))
    assert not forced.skipped_as_idempotent
    assert runner.calls == [VALIDATE, RELOAD, RELOAD]


def test_a_partial_match_still_deploys_every_file(site: Path, engine: Engine) -> None:
    engine.apply(two_files(site, V1))
    (site / "key.pem").write_bytes(b"operator edit")
    result = engine.apply(two_files(site, V1))
    assert not result.skipped_as_idempotent
    assert live(site) == (V1.fullchain, V1.key_pem)


def test_validate_failure_leaves_live_files_and_no_temps_or_backups(
    site: Path, engine: Engine, runner: ScriptedRunner
) -> None:
    engine.apply(two_files(site, V1))
    runner.fail(VALIDATE)
    with pytest.raises(ValidateFailed, match="validate-config exited with status 1"):
        engine.apply(two_files(site, V2, validate=VALIDATE, reload=RELOAD))
    assert live(site) == (V1.fullchain, V1.key_pem)
    assert RELOAD not in runner.calls
    assert sorted(os.listdir(site)) == ["cert.pem", "key.pem"]
    assert os.listdir(engine.state_dir) == ["locks"]


@as_root
def test_reload_failure_restores_bytes_modes_and_owners_and_reloads_again(
    site: Path, engine: Engine, runner: ScriptedRunner
) -> None:
    engine.apply(two_files(site, V1))
    os.chmod(site / "key.pem", 0o640)
    os.chown(site / "key.pem", 1234, 4321)
    runner.fail(RELOAD, times=1)
    plan = Plan(
        files=(
            File(str(site / "cert.pem"), V2.fullchain, FileRole.FULLCHAIN),
            File(str(site / "key.pem"), V2.key_pem, FileRole.KEY, 0o600, "0", "0"),
        ),
        reload=RELOAD,
    )
    with pytest.raises(ReloadFailed, match="reload command failed") as caught:
        engine.apply(plan)
    assert caught.value.result is not None
    assert caught.value.result.rolled_back
    assert runner.calls == [RELOAD, RELOAD]
    assert live(site) == (V1.fullchain, V1.key_pem)
    key = os.stat(site / "key.pem")
    assert (stat.S_IMODE(key.st_mode), key.st_uid, key.st_gid) == (0o640, 1234, 4321)
    assert leftovers(site) == []


def test_a_file_new_in_this_deploy_is_removed_on_rollback(
    site: Path, engine: Engine, runner: ScriptedRunner
) -> None:
    runner.fail(RELOAD, times=1)
    with pytest.raises(ReloadFailed):
        engine.apply(two_files(site, V1, reload=RELOAD))
    assert live(site) == (None, None)


def test_reload_failing_twice_is_rollback_failed_with_backups_and_recover_finishes(
    site: Path, tmp_path: Path, engine: Engine, runner: ScriptedRunner
) -> None:
    engine.apply(two_files(site, V1))
    runner.fail(RELOAD)
    with pytest.raises(RollbackFailed, match="reloading them failed too") as caught:
        engine.apply(two_files(site, V2, reload=RELOAD))
    failure = caught.value
    assert set(failure.backup_paths) == {str(site / "cert.pem"), str(site / "key.pem")}
    assert all(p is not None and os.path.exists(p) for p in failure.backup_paths.values())
    assert failure.journal is not None
    assert os.path.exists(failure.journal)
    assert live(site) == (V1.fullchain, V1.key_pem)
    recoveries = Engine(str(tmp_path / "state"), runner=ScriptedRunner()).recover()
    assert [r.journal for r in recoveries] == [failure.journal]
    assert recoveries[0].restored == ()
    assert not os.path.exists(failure.journal)
    assert sorted(os.listdir(site)) == ["cert.pem", "key.pem"]


@as_root
def test_existing_mode_and_owner_are_kept_unless_the_plan_overrides_them(
    site: Path, engine: Engine
) -> None:
    engine.apply(two_files(site, V1))
    os.chmod(site / "cert.pem", 0o640)
    os.chown(site / "cert.pem", 1001, 1002)
    engine.apply(two_files(site, V2, defaults=FileDefaults(0o400, "7", "7")))
    cert = os.stat(site / "cert.pem")
    assert (stat.S_IMODE(cert.st_mode), cert.st_uid, cert.st_gid) == (0o640, 1001, 1002)
    engine.apply(
        Plan(
            files=(File(str(site / "cert.pem"), V3.fullchain, FileRole.FULLCHAIN, 0o644, "5", "6"),)
        )
    )
    cert = os.stat(site / "cert.pem")
    assert (stat.S_IMODE(cert.st_mode), cert.st_uid, cert.st_gid) == (0o644, 5, 6)


@as_root
def test_a_new_file_takes_the_defaults_else_stays_0600(site: Path, engine: Engine) -> None:
    engine.apply(two_files(site, V1, defaults=FileDefaults(0o640, "10", "20")))
    key = os.stat(site / "key.pem")
    assert (stat.S_IMODE(key.st_mode), key.st_uid, key.st_gid) == (0o640, 10, 20)
    engine.apply(Plan(files=(File(str(site / "other.pem"), V1.cert_pem, FileRole.CERT),)))
    assert stat.S_IMODE(os.stat(site / "other.pem").st_mode) == 0o600


def _faulty(tmp_path: Path, site: Path, fault: Fault, privileged: bool = True) -> Engine:
    (tmp_path / "state").mkdir(exist_ok=True)
    fs = FaultyFileSystem([str(site), str(tmp_path / "state")], FaultPlan(fault))
    return Engine(str(tmp_path / "state"), fs=fs, runner=ScriptedRunner(), privileged=privileged)


def test_chmod_failure_is_fatal(tmp_path: Path, site: Path, engine: Engine) -> None:
    engine.apply(two_files(site, V1))
    broken = _faulty(tmp_path, site, Fault(0, errno.EPERM, op="chmod"))
    with pytest.raises(ApplyFailed, match=r"staging failed at .*certctl-tmp"):
        broken.apply(two_files(site, V2))
    assert live(site) == (V1.fullchain, V1.key_pem)
    assert sorted(os.listdir(site)) == ["cert.pem", "key.pem"]


@as_root
def test_chown_failure_is_fatal_only_when_privileged(tmp_path: Path, site: Path) -> None:
    root = _faulty(tmp_path, site, Fault(0, errno.EPERM, op="chown"))
    with pytest.raises(ApplyFailed):
        root.apply(two_files(site, V1, defaults=FileDefaults(owner="1", group="1")))
    assert live(site) == (None, None)
    user = _faulty(tmp_path, site, Fault(0, errno.EPERM, op="chown"), privileged=False)
    result = user.apply(two_files(site, V1, defaults=FileDefaults(owner="1", group="1")))
    assert live(site) == (V1.fullchain, V1.key_pem)
    assert any("could not chown" in w and "run the agent as root" in w for w in result.warnings)


def test_a_mid_loop_rename_failure_restores_and_never_deletes_existing_files(
    tmp_path: Path, site: Path, engine: Engine
) -> None:
    engine.apply(two_files(site, V1))
    broken = _faulty(tmp_path, site, Fault(2, errno.EXDEV, op="rename"))
    with pytest.raises(ApplyFailed, match="replacing files failed") as caught:
        broken.apply(two_files(site, V2, backup_retention=-1))
    assert caught.value.result is not None
    assert caught.value.result.rolled_back
    assert live(site) == (V1.fullchain, V1.key_pem)
    assert sorted(os.listdir(site)) == ["cert.pem", "key.pem"]


def test_retention_minus_one_keeps_no_backup_but_still_restores_on_reload_failure(
    site: Path, engine: Engine, runner: ScriptedRunner
) -> None:
    engine.apply(two_files(site, V1, backup_retention=-1))
    engine.apply(two_files(site, V2, backup_retention=-1))
    assert sorted(os.listdir(site)) == ["cert.pem", "key.pem"]
    runner.fail(RELOAD, times=1)
    with pytest.raises(ReloadFailed):
        engine.apply(two_files(site, V3, backup_retention=-1, reload=RELOAD))
    assert live(site) == (V2.fullchain, V2.key_pem)
    assert sorted(os.listdir(site)) == ["cert.pem", "key.pem"]


@pytest.mark.parametrize(("retention", "kept"), [(2, 2), (0, 3), (1, 1)])
def test_the_janitor_keeps_the_newest_backups(
    site: Path, engine: Engine, retention: int, kept: int
) -> None:
    versions = [ISSUER.issue(f"r{n}.example") for n in range(6)]
    for material in versions:
        engine.apply(two_files(site, material, backup_retention=retention))
    backups = backups_of(str(site / "cert.pem"), os.listdir(site))
    assert len(backups) == kept
    assert Path(backups[-1]).read_bytes() == versions[-2].fullchain
    (site / "cert.pem.certctl-bak.operator-copy").write_bytes(b"x")
    engine.apply(two_files(site, V1, backup_retention=retention))
    assert (site / "cert.pem.certctl-bak.operator-copy").exists()


def test_a_missing_directory_fails_cleanly(tmp_path: Path, engine: Engine) -> None:
    with pytest.raises(ApplyFailed, match="preparing failed"):
        engine.apply(two_files(tmp_path / "absent", V1))
    assert os.listdir(engine.state_dir) == ["locks"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ((), "plan has no files"),
        ((File("relative.pem", b"x"),), "must be absolute"),
        ((File("/a/../b.pem", b"x"),), "must be absolute and normalized"),
        ((File("/a/x.pem", b"x"), File("/a/x.pem", b"y")), "appears twice"),
        ((File("/a/x.pem.certctl-tmp.1", b"x"),), "temp/backup naming"),
        ((File("/a/x.pem", b"x", owner="root"),), "set both or neither"),
        ((File("/a/x.pem", b"x", mode=0o10000),), "out of range"),
    ],
)
def test_invalid_plans_are_refused_before_any_io(
    engine: Engine, files: tuple[File, ...], message: str
) -> None:
    with pytest.raises(PlanInvalid, match=message):
        engine.apply(Plan(files=files))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reload": ()}, "reload command is empty"),
        ({"hook_timeout": 0}, "hook_timeout"),
        ({"backup_retention": -2}, "backup_retention"),
        ({"target_type": ""}, "target_type"),
        ({"defaults": FileDefaults(owner="no-such-user-x", group="0")}, "not a user"),
        ({"defaults": FileDefaults(owner="0", group="no-such-group-x")}, "not a group"),
    ],
)
def test_invalid_plan_settings_are_refused(
    site: Path, engine: Engine, change: dict[str, object], message: str
) -> None:
    with pytest.raises(PlanInvalid, match=message):
        engine.apply(two_files(site, V1, **change))
    assert live(site) == (None, None)


def test_crash_between_renames_is_rolled_back_by_recover(
    tmp_path: Path, site: Path, engine: Engine
) -> None:
    engine.apply(two_files(site, V1))
    crashing = _faulty(tmp_path, site, Fault(2, op="rename"))
    with pytest.raises(SimulatedCrash):
        crashing.apply(two_files(site, V2, reload=RELOAD))
    assert live(site) == (V2.fullchain, V1.key_pem)  # torn, as the crash left it
    runner = ScriptedRunner()
    (recovery,) = Engine(str(tmp_path / "state"), runner=runner).recover()
    assert not recovery.forward
    assert recovery.restored == (str(site / "cert.pem"),)
    assert runner.calls == [RELOAD]
    assert live(site) == (V1.fullchain, V1.key_pem)
    assert sorted(os.listdir(site)) == ["cert.pem", "key.pem"]
    assert os.listdir(tmp_path / "state") == ["locks"]


def test_crash_after_the_commit_mark_rolls_forward(tmp_path: Path, site: Path) -> None:
    crashing = _faulty(tmp_path, site, Fault(3, op="fsync_dir", power_cut=True))
    with pytest.raises(SimulatedCrash):
        crashing.apply(two_files(site, V1))
    (recovery,) = Engine(str(tmp_path / "state"), runner=ScriptedRunner()).recover()
    assert recovery.forward
    assert live(site) == (V1.fullchain, V1.key_pem)


def test_recover_removes_a_half_written_journal(tmp_path: Path, site: Path) -> None:
    crashing = _faulty(tmp_path, site, Fault(0, op="fsync"))
    with pytest.raises(SimulatedCrash):
        crashing.apply(two_files(site, V1))
    assert any(n.endswith(".json.tmp") for n in os.listdir(tmp_path / "state"))
    assert Engine(str(tmp_path / "state")).recover() == []
    assert os.listdir(tmp_path / "state") == ["locks"]


def test_an_unfinished_journal_is_settled_by_the_next_deploy_to_its_paths(
    tmp_path: Path, site: Path, engine: Engine, runner: ScriptedRunner
) -> None:
    engine.apply(two_files(site, V1))
    runner.fail(RELOAD)
    with pytest.raises(RollbackFailed):
        engine.apply(two_files(site, V2, reload=RELOAD))
    engine.apply(two_files(site, V3))
    assert live(site) == (V3.fullchain, V3.key_pem)
    assert os.listdir(engine.state_dir) == ["locks"]
    assert len(backups_of(str(site / "cert.pem"), os.listdir(site))) == 1


def test_a_journal_covering_other_paths_blocks_the_deploy(
    site: Path, engine: Engine, runner: ScriptedRunner
) -> None:
    runner.fail(RELOAD)
    with pytest.raises(RollbackFailed):
        engine.apply(two_files(site, V1, reload=RELOAD))
    only_cert = Plan(files=(File(str(site / "cert.pem"), V2.fullchain, FileRole.FULLCHAIN),))
    with pytest.raises(RecoveryPending, match=r"also covers .*key\.pem"):
        engine.apply(only_cert)


def test_recover_refuses_to_guess_when_a_file_holds_neither_version(
    tmp_path: Path, site: Path, engine: Engine
) -> None:
    engine.apply(two_files(site, V1))
    crashing = _faulty(tmp_path, site, Fault(2, op="rename"))
    with pytest.raises(SimulatedCrash):
        crashing.apply(two_files(site, V2))
    (site / "cert.pem").write_bytes(b"edited by an operator")
    with pytest.raises(RollbackFailed, match="neither the old nor the new") as caught:
        Engine(str(tmp_path / "state")).recover()
    assert caught.value.journal is not None
    assert os.path.exists(caught.value.journal)
    assert (site / "cert.pem").read_bytes() == b"edited by an operator"


def test_recover_accepts_one_journal_path(tmp_path: Path, site: Path, engine: Engine) -> None:
    engine.apply(two_files(site, V1))
    crashing = _faulty(tmp_path, site, Fault(1, op="rename"))
    with pytest.raises(SimulatedCrash):
        crashing.apply(two_files(site, V2))
    (journal,) = (n for n in os.listdir(tmp_path / "state") if n.endswith(".json"))
    (recovery,) = Engine(str(tmp_path / "state")).recover(str(tmp_path / "state" / journal))
    assert recovery.restored == ()
    assert live(site) == (V1.fullchain, V1.key_pem)


def test_an_unreadable_journal_asks_for_a_human(tmp_path: Path, engine: Engine) -> None:
    bad = Path(engine.state_dir) / f"deploy-{stamp()}.json"
    bad.write_bytes(b"{not json")
    with pytest.raises(RollbackFailed, match="is unreadable"):
        engine.recover()


def test_stamps_are_19_digits_and_strictly_increasing() -> None:
    stamps = [stamp() for _ in range(1000)]
    assert all(len(s) == STAMP_DIGITS and s.isdigit() for s in stamps)
    assert stamps == sorted(set(stamps))


def test_a_deploy_never_proceeds_over_a_journal_it_could_not_finish(
    tmp_path: Path, site: Path, engine: Engine, runner: ScriptedRunner
) -> None:
    engine.apply(two_files(site, V1))
    runner.fail(RELOAD)
    with pytest.raises(RollbackFailed) as caught:
        engine.apply(two_files(site, V2, reload=RELOAD))
    journal = caught.value.journal
    assert journal is not None
    # Backups of cert and key go first, then the journal itself: fail that removal.
    stuck = _faulty(tmp_path, site, Fault(2, errno.EIO, op="remove"))
    with pytest.raises(ApplyFailed, match="could not finish unfinished deploy journal"):
        stuck.apply(two_files(site, V3))
    assert os.path.exists(journal)
    assert live(site) == (V1.fullchain, V1.key_pem)
    engine.apply(two_files(site, V3))
    assert live(site) == (V3.fullchain, V3.key_pem)
    assert not os.path.exists(journal)
