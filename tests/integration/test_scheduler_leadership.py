"""Replicas on one real PostgreSQL: one scheduler leads at a time, another takes over when
it stops or its session dies, and concurrent claimers never share a job."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import trio
from conftest_store import T0, certificate, job, seed, sql
from structlog.testing import capture_logs

from certctl.core.clock import SystemClock
from certctl.core.model import JobType
from certctl.server.scheduler import Intervals, Scheduler
from certctl.services.context import Services
from certctl.services.issuers import IssuerDefaults, IssuerPool
from certctl.services.rules import DOMAIN_RULES
from certctl.store.postgres import PostgresStore, open_postgres_store

ELECTION = 0.2
FAST = Intervals(election=timedelta(seconds=ELECTION))
HANG = 60
"""A bound against a hang only: a busy two-core machine may be slow, and the takeover's
speed is not a pass/fail time (the order of events is: never two leaders)."""


@asynccontextmanager
async def two_replicas(dsn: str, tmp_path: Path) -> AsyncIterator[tuple[Scheduler, Scheduler]]:
    async with (
        open_postgres_store(dsn, DOMAIN_RULES, max_size=4) as first,
        open_postgres_store(dsn, DOMAIN_RULES, max_size=4) as second,
    ):
        yield _scheduler(first, tmp_path / "first"), _scheduler(second, tmp_path / "second")


def _scheduler(store: PostgresStore, data_dir: Path) -> Scheduler:
    issuers = IssuerPool(IssuerDefaults(data_dir=data_dir))
    return Scheduler(Services(store=store, clock=SystemClock(), issuers=issuers), FAST)


async def wait_for(condition: Callable[[], bool]) -> None:
    """Until ``condition`` holds, polling every 10 ms; fails after ``HANG`` seconds."""
    with trio.fail_after(HANG):
        while not condition():
            await trio.sleep(0.01)


async def test_one_leader_at_a_time_and_a_takeover_when_it_stops(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with two_replicas(pg_dsn, tmp_path) as replicas, trio.open_nursery() as nursery:
        scopes = [trio.CancelScope() for _ in replicas]
        both: list[float] = []

        async def run(scheduler: Scheduler, scope: trio.CancelScope) -> None:
            with scope:
                await scheduler.run()

        async def watch() -> None:
            while True:
                if all(s.is_leader for s in replicas):
                    both.append(trio.current_time())
                await trio.sleep(0.005)

        for scheduler, scope in zip(replicas, scopes, strict=True):
            nursery.start_soon(run, scheduler, scope)
        nursery.start_soon(watch)
        await wait_for(lambda: any(s.is_leader for s in replicas))
        await trio.sleep(5 * ELECTION)  # followers keep trying, and keep failing
        leader = next(i for i, s in enumerate(replicas) if s.is_leader)
        follower = replicas[1 - leader]
        assert not follower.is_leader

        scopes[leader].cancel()
        await wait_for(lambda: follower.is_leader)
        assert not replicas[leader].is_leader
        assert both == []
        nursery.cancel_scope.cancel()


async def test_a_leader_whose_session_is_killed_steps_down(pg_dsn: str, tmp_path: Path) -> None:
    kill = (
        "SELECT pg_terminate_backend(pid, 5000) AS gone FROM pg_locks WHERE locktype = "
        "'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with capture_logs() as logs:
        async with two_replicas(pg_dsn, tmp_path) as replicas, trio.open_nursery() as nursery:
            for scheduler in replicas:
                nursery.start_soon(scheduler.run)
            await wait_for(lambda: any(s.is_leader for s in replicas))
            leader = next(s for s in replicas if s.is_leader)

            ((killed,),) = await sql(pg_dsn, kill)
            assert killed["gone"]
            await wait_for(lambda: not leader.is_leader)
            await wait_for(lambda: any(s.is_leader for s in replicas))
            nursery.cancel_scope.cancel()
    events = [e["event"] for e in logs]
    assert "scheduler leadership lost; loops stopped" in events


async def test_concurrent_agent_claims_take_each_deployment_once(pg_dsn: str) -> None:
    """Eight claimers over two replicas drain one agent's 200 Pending deployments."""
    async with (
        open_postgres_store(pg_dsn, DOMAIN_RULES, max_size=4) as first,
        open_postgres_store(pg_dsn, DOMAIN_RULES, max_size=4) as second,
    ):
        await seed(first)
        await first.create_certificate(certificate(target_ids=("target-1",)))
        deployments = [
            job(
                f"deploy-{i:03d}",
                job_type=JobType.DEPLOYMENT,
                target_id="target-1",
                agent_id="agent-1",
            )
            for i in range(200)
        ]
        await first.create_jobs(deployments)
        claimed: list[str] = []

        async def claimer(store: PostgresStore) -> None:
            while batch := await store.claim_jobs(agent_id="agent-1", now=T0, limit=5):
                claimed.extend(j.id for j in batch)

        async with trio.open_nursery() as nursery:
            for store in (first, second) * 4:
                nursery.start_soon(claimer, store)
        assert sorted(claimed) == sorted(j.id for j in deployments)
        ((row,),) = await sql(
            pg_dsn, "SELECT count(*) FROM jobs WHERE status = 'Running' AND type = 'Deployment'"
        )
        assert row["count"] == 200
