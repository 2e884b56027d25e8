"""What only the PostgreSQL store can show: the database itself enforcing the rules,
concurrency between real connections, migrations, recovery from a dead server, and the
embedded default."""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
import trio
from click.testing import CliRunner
from conftest_store import (
    PASSPHRASE,
    T0,
    Cluster,
    certificate,
    event,
    fresh_database,
    issuer,
    job,
    seed,
    sql,
    team,
)

from certctl import config
from certctl.cli import main
from certctl.core.model import (
    ActorType,
    AgentStatus,
    CertificateStatus,
    ExtendedKeyUsage,
    IssuerType,
    JobStatus,
    JobType,
    KeyAlgorithm,
    RevocationReason,
    TargetType,
    VerificationStatus,
)
from certctl.pki.errors import SealError
from certctl.services.rules import DOMAIN_RULES
from certctl.store import _sql
from certctl.store.base import DUE_STATUSES
from certctl.store.connect import open_store
from certctl.store.embedded import EmbeddedPostgres
from certctl.store.errors import DataDirUnusable, NotFound, SchemaMismatch, StoreUnavailable
from certctl.store.migrate import available
from certctl.store.postgres import PostgresStore, open_postgres_store

# -- the database enforces what matters even against raw SQL --------------------------------


async def test_audit_rows_cannot_be_changed_or_removed(
    pg_store: PostgresStore, pg_dsn: str
) -> None:
    await pg_store.append_audit([event()])
    for statement in (
        "UPDATE audit_events SET actor = 'mallory'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await sql(pg_dsn, statement)
    assert (await pg_store.list_audit()).items == (event(),)


async def test_secret_is_stored_encrypted_and_bound_to_its_row(
    pg_store: PostgresStore, pg_dsn: str
) -> None:
    plaintext = "hunter2-very-secret-token"
    await pg_store.create_issuer(issuer(config={"url": "u", "secret": {"token": plaintext}}))
    await pg_store.create_issuer(issuer("issuer-2", config={"secret": {"token": "other"}}))
    ((row,),) = await sql(
        pg_dsn, "SELECT encrypted_secret, config::text FROM issuers WHERE id = 'issuer-1'"
    )
    blob, stored_config = bytes(row["encrypted_secret"]), row["config"]
    assert plaintext.encode() not in blob
    assert b"token" not in blob
    assert plaintext not in stored_config
    assert "secret" not in stored_config
    assert blob[0] == 1  # certctl.pki.sealed format version

    # A blob copied onto another row does not open there.
    await sql(
        pg_dsn,
        "UPDATE issuers SET encrypted_secret = (SELECT encrypted_secret FROM issuers "
        "WHERE id = 'issuer-1') WHERE id = 'issuer-2'",
    )
    with pytest.raises(SealError, match="moved to another owner"):
        await pg_store.issuer_secret("issuer-2")
    # And another passphrase does not open it either.
    async with open_postgres_store(
        pg_dsn, DOMAIN_RULES, max_size=1, encryption_key="x" * 40
    ) as other:
        with pytest.raises(SealError):
            await other.issuer_secret("issuer-1")
    assert dict(await pg_store.issuer_secret("issuer-1")) == {"token": plaintext}


async def test_two_concurrent_claimers_never_get_the_same_job(pg_dsn: str) -> None:
    """Two replicas (two pools) with several workers each drain one queue."""
    async with (
        open_postgres_store(pg_dsn, DOMAIN_RULES, max_size=4) as first,
        open_postgres_store(pg_dsn, DOMAIN_RULES, max_size=4) as second,
    ):
        await seed(first)
        await first.create_certificate(certificate())
        jobs = [job(f"job-{i:03d}", now=T0) for i in range(200)]
        await first.create_jobs(jobs)
        claimed: list[str] = []

        async def worker(store: PostgresStore) -> None:
            while batch := await store.claim_jobs(agent_id=None, now=T0, limit=3):
                claimed.extend(j.id for j in batch)
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            for store in (first, second) * 4:
                nursery.start_soon(worker, store)
        assert len(claimed) == len(set(claimed)) == 200
        ((row,),) = await sql(pg_dsn, "SELECT count(*) FROM jobs WHERE status = 'Running'")
        assert row["count"] == 200


async def test_pool_size_comes_from_the_settings(pg_dsn: str) -> None:
    settings = config.load({"CERTCTL_DATABASE_URL": pg_dsn, "CERTCTL_DATABASE_MAX_CONNS": "3"})
    async with open_store(settings, DOMAIN_RULES) as store:
        assert store.pool_size == (1, 3)
        await seed(store)
        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(store.list_certificates)
        ((row,),) = await sql(
            pg_dsn,
            "SELECT count(*) - 1 AS n FROM pg_stat_activity WHERE datname = current_database()",
        )
        assert row["n"] == 3


# -- schema ---------------------------------------------------------------------------------

ENUM_COLUMNS = [
    ("managed_certificates", "status", CertificateStatus),
    ("managed_certificates", "revocation_reason", RevocationReason),
    ("certificate_revocations", "reason", RevocationReason),
    ("jobs", "type", JobType),
    ("jobs", "status", JobStatus),
    ("jobs", "verification_status", VerificationStatus),
    ("agents", "status", AgentStatus),
    ("issuers", "type", IssuerType),
    ("deployment_targets", "type", TargetType),
    ("certificate_versions", "key_algorithm", KeyAlgorithm),
    ("audit_events", "actor_type", ActorType),
    ("certificate_profiles", "allowed_ekus", ExtendedKeyUsage),
]


async def test_enum_checks_hold_exactly_the_model_values(pg_dsn: str) -> None:
    for table, column, kind in ENUM_COLUMNS:
        (rows,) = await sql(
            pg_dsn,
            "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint "
            f"WHERE conrelid = '{table}'::regclass AND contype = 'c'",
        )
        (definition,) = [r["def"] for r in rows if re.search(rf"\b{column}\b", r["def"])]
        assert set(re.findall(r"'(\w+)'", definition)) == {m.value for m in kind}, table
    with pytest.raises(asyncpg.CheckViolationError):
        await sql(
            pg_dsn,
            "INSERT INTO audit_events VALUES ('a', 'x', 'user', 'a', 'r', 'i', now(), '{}')",
        )


async def test_constraint_names_are_the_ones_the_store_maps(pg_dsn: str) -> None:
    (rows,) = await sql(
        pg_dsn,
        "SELECT conname FROM pg_constraint WHERE contype IN ('p', 'u', 'f') "
        "AND connamespace = 'public'::regnamespace AND conname <> 'schema_migrations_pkey'",
    )
    assert {r["conname"] for r in rows} == set(_sql.UNIQUES) | set(_sql.FOREIGN_KEYS)


async def test_hot_queries_can_use_their_indexes(pg_dsn: str) -> None:
    """The statements the store runs, planned with their parameters, reach for the
    partial indexes made for them (sequential scans are off so table size does not
    matter; a predicate the index cannot prove would still fall back to a scan)."""
    plans = await sql(
        pg_dsn,
        "SET enable_seqscan = off",
        f"PREPARE due(timestamptz, timestamptz, text, bigint) AS {_sql.DUE_RENEWALS}",
        f"PREPARE claim(timestamptz, bigint, text) AS {_sql.CLAIM}",
        "EXPLAIN EXECUTE due(now(), '-infinity', '', 100)",
        "EXPLAIN EXECUTE claim(now(), 10, NULL)",
        "SELECT pg_get_indexdef('managed_certificates_renewal_due_idx'::regclass) AS d",
    )
    due_plan, claim_plan = (" ".join(r["QUERY PLAN"] for r in plan) for plan in plans[3:5])
    assert "managed_certificates_renewal_due_idx" in due_plan
    assert "jobs_pending_idx" in claim_plan
    index = plans[5][0]["d"]
    assert set(re.findall(r"'(\w+)'", index)) == {s.value for s in DUE_STATUSES}


# -- migrations -----------------------------------------------------------------------------


async def test_concurrent_migrators_apply_each_migration_once(pg_cluster: Cluster) -> None:
    async with fresh_database(pg_cluster, template=None) as dsn:
        results: list[int] = []

        async def migrator() -> None:
            async with open_postgres_store(dsn, DOMAIN_RULES, max_size=1) as store:
                with pytest.raises(StoreUnavailable, match="run `certctl db migrate`"):
                    await store.ready()
                results.append(len(await store.migrate()))
                await store.ready()

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(migrator)
        shipped = len(available())
        assert sorted(results) == [0, 0, shipped]
        ((row,),) = await sql(dsn, "SELECT count(*) FROM schema_migrations")
        assert row["count"] == shipped


async def test_an_edited_or_unknown_migration_is_refused(
    pg_store: PostgresStore, pg_dsn: str
) -> None:
    assert await pg_store.migrate() == ()
    await sql(pg_dsn, "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(SchemaMismatch, match="restore the shipped file"):
        await pg_store.migrate()
    with pytest.raises(StoreUnavailable, match="restore the shipped file"):
        await pg_store.ready()
    await sql(
        pg_dsn,
        f"UPDATE schema_migrations SET checksum = '{available()[0].checksum}' WHERE version = 1",
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')",
    )
    with pytest.raises(SchemaMismatch, match="newer than this build"):
        await pg_store.migration_status()


def test_cli_migrates_and_reports_status(pg_cluster: Cluster) -> None:
    name = pg_cluster.create_database(template=None)
    try:
        env = {"CERTCTL_DATABASE_URL": pg_cluster.dsn(name)}
        runner = CliRunner()
        before = runner.invoke(main, ["db", "status"], env=env)
        assert before.exit_code == 0, before.output
        assert "0001_initial  pending" in before.output
        migrated = runner.invoke(main, ["db", "migrate"], env=env)
        assert migrated.exit_code == 0, migrated.output
        assert "applied 0001_initial" in migrated.output
        again = runner.invoke(main, ["db", "migrate"], env=env)
        assert "nothing to apply" in again.output
        after = runner.invoke(main, ["db", "status"], env=env)
        shipped = len(available())
        assert f"{shipped} of {shipped} migrations applied" in after.output
        assert "pending" not in after.output
    finally:
        pg_cluster.drop_database(name)


def test_cli_refuses_an_unusable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(main, ["db", "status"], env={"CERTCTL_DATA_DIR": str(blocker)})
    assert result.exit_code == 2
    assert f"CERTCTL_DATA_DIR {blocker} is not a directory" in result.output


# -- failures and recovery ------------------------------------------------------------------


async def test_unreachable_database_is_store_unavailable(pg_dsn: str, tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="PostgreSQL is unreachable"):
        async with open_postgres_store(
            f"postgresql://postgres@/x?host={tmp_path}", DOMAIN_RULES, max_size=1
        ):
            pass
    async with open_postgres_store(
        pg_dsn, DOMAIN_RULES, max_size=1, encryption_key=PASSPHRASE
    ) as store:
        await store.aclose()
        with pytest.raises(StoreUnavailable, match="InterfaceError"):
            await store.create_team(team())


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A data dir outside pytest's basetemp (pgserver widens its parents' permissions)."""
    root = Path(tempfile.mkdtemp(prefix="certctl-store-scratch-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_killed_postgres_gives_unavailable_then_recovers(scratch_dir: Path) -> None:
    embedded = await trio.to_thread.run_sync(EmbeddedPostgres.start, scratch_dir)
    try:
        async with open_postgres_store(embedded.dsn(), DOMAIN_RULES, max_size=2) as store:
            await store.migrate()
            await store.create_team(team())
            pid = embedded.pid
            assert pid is not None
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the postmaster and its backends die
            with trio.fail_after(20):
                while not _gone(pid):
                    await trio.sleep(0.05)
            for _ in range(3):
                with pytest.raises(StoreUnavailable, match="PostgreSQL is unreachable"):
                    await store.get_team("team-1")
            await trio.to_thread.run_sync(embedded.ensure_running)
            assert embedded.pid != pid
            assert (await store.get_team("team-1")) == team()
            await store.create_team(team("team-2"))
    finally:
        await trio.to_thread.run_sync(embedded.stop)


async def test_embedded_default_starts_migrates_and_stops(scratch_dir: Path) -> None:
    settings = config.load({"CERTCTL_DATA_DIR": str(scratch_dir)})
    async with open_store(settings, DOMAIN_RULES) as store:
        await store.ready()
        await store.create_team(team())
        pidfile = (scratch_dir / "postgres" / "postmaster.pid").read_text().splitlines()
        # postmaster.pid: pid, data dir, start, port, socket dir, TCP listen address, ...
        assert Path(pidfile[4]).is_dir()
        assert pidfile[5].strip() == ""
    assert not (scratch_dir / "postgres" / "postmaster.pid").exists()


@pytest.mark.parametrize("make", ["file", "file-in-place-of-postgres", "parent-is-file"])
def test_unusable_data_dir_is_one_clear_sentence(tmp_path: Path, make: str) -> None:
    data_dir = tmp_path / "data"
    if make == "file":
        data_dir.write_text("x")
    elif make == "file-in-place-of-postgres":
        data_dir.mkdir()
        (data_dir / "postgres").write_text("x")
    else:
        (tmp_path / "blocker").write_text("x")
        data_dir = tmp_path / "blocker" / "data"
    with pytest.raises(
        DataDirUnusable, match=r"CERTCTL_DATA_DIR|postgres is not a directory"
    ) as info:
        EmbeddedPostgres.start(data_dir)
    message = str(info.value)
    assert str(tmp_path) in message
    assert message.endswith(".")


async def test_store_errors_leave_the_store_context_as_themselves(pg_dsn: str) -> None:
    """trio-asyncio's nurseries would wrap them in exception groups on newer trio."""
    with pytest.raises(NotFound):
        async with open_postgres_store(pg_dsn, DOMAIN_RULES, max_size=1) as store:
            await store.get_team("missing")
