"""Store fixtures, registered as a plugin by tests/conftest.py so every suite can use them.

One embedded PostgreSQL (pgserver's bundled binaries, no system install) serves the whole
session. Migrations run once into a template database; each test gets its own database
cloned from it with ``CREATE DATABASE ... TEMPLATE``, so tests never see each other's rows
and never pay for the migrations again. Durability is switched off on this throwaway
cluster only (fsync, synchronous commit): nothing in it must survive a crash, and the
suite runs several times faster.

Admin statements (create, drop) run on plain asyncio in a worker thread, independent of
the trio-asyncio loop of the store under test.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio

from certctl.core.jobs import create_job
from certctl.core.model import (
    ActorType,
    Agent,
    AuditEvent,
    CertificateVersion,
    Issuer,
    IssuerType,
    Job,
    JobStatus,
    JobType,
    KeyAlgorithm,
    ManagedCertificate,
    Owner,
    RenewalPolicy,
    Target,
    TargetType,
    Team,
)
from certctl.services.rules import DOMAIN_RULES
from certctl.store.base import Store
from certctl.store.embedded import EmbeddedPostgres
from certctl.store.memory import MemoryStore
from certctl.store.migrate import apply_migrations
from certctl.store.postgres import PostgresStore, open_postgres_store

TEMPLATE = "certctl_template"
PASSPHRASE = "store-tests-passphrase-0123456789abcdef"


def run_sql(dsn: str, *statements: str) -> list[Any]:
    """Run statements one by one, bypassing the store (plain asyncio; blocks)."""

    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return [await conn.fetch(sql) for sql in statements]
        finally:
            await conn.close()

    return asyncio.run(go())


async def sql(dsn: str, *statements: str) -> list[Any]:
    """``run_sql`` from a trio test, in a worker thread."""
    return await trio.to_thread.run_sync(lambda: run_sql(dsn, *statements))


class Cluster:
    """The session's embedded PostgreSQL and the databases cloned for tests."""

    def __init__(self, embedded: EmbeddedPostgres) -> None:
        self.embedded = embedded

    def dsn(self, database: str) -> str:
        return self.embedded.dsn(database)

    def run(self, database: str, *statements: str) -> list[Any]:
        return run_sql(self.dsn(database), *statements)

    def create_database(self, template: str | None = TEMPLATE) -> str:
        name = f"test_{secrets.token_hex(6)}"
        clause = f" TEMPLATE {template}" if template else ""
        self.run("postgres", f'CREATE DATABASE "{name}"{clause}')
        return name

    def drop_database(self, name: str) -> None:
        self.run("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemps, and
    # PostgreSQL must keep its data dir for the whole session.
    root = Path(tempfile.mkdtemp(prefix="certctl-store-"))
    embedded = EmbeddedPostgres.start(root)
    cluster = Cluster(embedded)
    cluster.run(
        "postgres",
        "ALTER SYSTEM SET fsync = off",
        "ALTER SYSTEM SET synchronous_commit = off",
        "ALTER SYSTEM SET full_page_writes = off",
        "SELECT pg_reload_conf()",
        f"CREATE DATABASE {TEMPLATE}",
    )

    async def migrate_template() -> None:
        conn = await asyncpg.connect(cluster.dsn(TEMPLATE))
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    asyncio.run(migrate_template())
    yield cluster
    embedded.stop()
    shutil.rmtree(root)


@asynccontextmanager
async def fresh_database(cluster: Cluster, template: str | None = TEMPLATE) -> AsyncIterator[str]:
    """The DSN of a new database (migrated unless ``template`` is None), dropped after."""
    name = await trio.to_thread.run_sync(cluster.create_database, template)
    try:
        yield cluster.dsn(name)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(cluster.drop_database, name)


@pytest.fixture
async def pg_dsn(pg_cluster: Cluster) -> AsyncIterator[str]:
    async with fresh_database(pg_cluster) as dsn:
        yield dsn


@pytest.fixture
async def pg_store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    async with open_postgres_store(
        pg_dsn, DOMAIN_RULES, max_size=4, encryption_key=PASSPHRASE
    ) as store:
        yield store


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest, pg_cluster: Cluster) -> AsyncIterator[Store]:
    """Each protocol test runs on both stores: the semantics are the contract."""
    if request.param == "memory":
        yield MemoryStore(DOMAIN_RULES, encryption_key=PASSPHRASE)
        return
    async with (
        fresh_database(pg_cluster) as dsn,
        open_postgres_store(dsn, DOMAIN_RULES, max_size=4, encryption_key=PASSPHRASE) as pg,
    ):
        yield pg


# -- entity factories shared by the store suites ----------------------------------------

T0 = datetime(2030, 1, 1, tzinfo=UTC)
KEY_HASH = hashlib.sha256(b"agent-key-1").hexdigest()


def team(team_id: str = "team-1", **changes: Any) -> Team:
    return replace(Team(team_id, f"name-{team_id}", T0, T0), **changes)


def owner(owner_id: str = "owner-1", **changes: Any) -> Owner:
    return replace(Owner(owner_id, f"name-{owner_id}", f"{owner_id}@example.com"), **changes)


def policy(policy_id: str = "policy-1", **changes: Any) -> RenewalPolicy:
    return replace(RenewalPolicy(policy_id, f"name-{policy_id}"), **changes)


def issuer(issuer_id: str = "issuer-1", **changes: Any) -> Issuer:
    return replace(Issuer(issuer_id, f"name-{issuer_id}", IssuerType.LOCAL_CA), **changes)


def agent(agent_id: str = "agent-1", **changes: Any) -> Agent:
    base = Agent(agent_id, f"name-{agent_id}", f"{agent_id}.example.com", T0, last_heartbeat_at=T0)
    return replace(base, **changes)


def target(target_id: str = "target-1", agent_id: str = "agent-1", **changes: Any) -> Target:
    return replace(Target(target_id, f"name-{target_id}", TargetType.NGINX, agent_id), **changes)


def certificate(cert_id: str = "cert-1", **changes: Any) -> ManagedCertificate:
    base = ManagedCertificate(
        cert_id,
        f"name-{cert_id}",
        f"{cert_id}.example.com",
        owner_id="owner-1",
        issuer_id="issuer-1",
        renewal_policy_id="policy-1",
        created_at=T0,
        updated_at=T0,
    )
    return replace(base, **changes)


def version(
    cert_id: str = "cert-1",
    version_id: str = "version-1",
    *,
    not_before: datetime = T0,
    lifetime: timedelta = timedelta(days=90),
    created_at: datetime | None = None,
) -> CertificateVersion:
    return CertificateVersion(
        version_id,
        cert_id,
        serial_number=f"serial-{version_id}",
        not_before=not_before,
        not_after=not_before + lifetime,
        fingerprint_sha256=hashlib.sha256(version_id.encode()).hexdigest(),
        pem_chain="-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
        key_algorithm=KeyAlgorithm.ECDSA,
        key_size=256,
        created_at=created_at or not_before,
    )


def job(
    job_id: str = "job-1",
    cert_id: str = "cert-1",
    job_type: JobType = JobType.RENEWAL,
    *,
    now: datetime = T0,
    status: JobStatus = JobStatus.PENDING,
    target_id: str | None = None,
    agent_id: str | None = None,
) -> Job:
    return create_job(
        job_id=job_id,
        job_type=job_type,
        certificate_id=cert_id,
        policy=policy(),
        now=now,
        status=status,
        target_id=target_id,
        agent_id=agent_id,
    )


def event(event_id: str = "audit-1", *, at: datetime = T0, **changes: Any) -> AuditEvent:
    base = AuditEvent(
        event_id, "alice", ActorType.USER, "certificate_created", "certificate", "cert-1", at
    )
    return replace(base, **changes)


async def seed(store: Store) -> None:
    """What a certificate needs to exist: owner, issuer, policy; plus one agent and target."""
    await store.create_team(team())
    await store.create_owner(owner(team_id="team-1"))
    await store.create_policy(policy())
    await store.create_issuer(issuer())
    await store.create_agent(agent(), KEY_HASH)
    await store.create_target(target())
