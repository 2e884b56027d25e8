"""The scheduler: the control plane's periodic work, as loops under the server's supervisor.

Two kinds of loop. Cluster loops (renewal scan, job processor, retries, timeouts, the
lost-agent reaper, agent health) change shared state, so with several replicas only the
one holding the ``scheduler`` leadership lock runs them; the others keep trying for the
lock and take over within one election interval of the leader stepping down or dying.
Replica loops (CRL refresh, metric gauges) refresh what each process keeps for itself, the
CRL cache of its ``IssuerPool`` and the gauges its ``/metrics`` serves, so every replica
runs them whether it leads or not.

Every loop runs once when it starts, then on its interval, through
``certctl.server.supervisor``: a step that fails (the database is down, a bug) is logged,
counted and retried with backoff, and a loop that keeps failing turns ``/ready`` to 503;
one bad issuer or one outage never stops renewals for good. A leader that loses its lock
finds out on its next check and cancels its loops; until then two replicas may both run
them, which the store makes safe (claims skip locked rows, transitions are
compare-and-set).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import trio

from certctl.config import Settings
from certctl.logging import get_logger
from certctl.server.metrics import SCHEDULER_LEADER
from certctl.server.supervisor import Supervisor
from certctl.services import agents, jobs, renewal, revocation, stats
from certctl.services.context import Services
from certctl.store.base import Leadership
from certctl.store.errors import StoreError

LOCK: Final = "scheduler"
"""The leadership lock's name; every replica of one control plane must use the same."""

log = get_logger(__name__)

Step = Callable[[Services], Awaitable[object]]
ELECTION: Final = "scheduler_election"
"""The supervisor's name for the election (its failures count like a loop's)."""


@dataclass(frozen=True, slots=True)
class Intervals:
    """How often each loop ticks, and how often leadership is sought and confirmed.

    The CRL refresh and gauges intervals have no setting: CRLs stay valid for 24 hours,
    so hourly re-signing leaves ample margin, and gauges only need to keep up with scrapes.
    """

    renewal: timedelta = timedelta(hours=1)
    jobs: timedelta = timedelta(seconds=30)
    retries: timedelta = timedelta(minutes=5)
    timeouts: timedelta = timedelta(minutes=10)
    agent_health: timedelta = timedelta(minutes=2)
    crl_refresh: timedelta = timedelta(hours=1)
    gauges: timedelta = timedelta(seconds=30)
    election: timedelta = timedelta(seconds=5)

    @classmethod
    def from_settings(cls, settings: Settings) -> Intervals:
        return cls(
            renewal=settings.renewal_check_interval,
            jobs=settings.job_processor_interval,
            retries=settings.retry_interval,
            timeouts=settings.job_timeout_interval,
            agent_health=settings.agent_health_check_interval,
        )


@dataclass(frozen=True, slots=True)
class Loop:
    """One step, run every ``every`` and given at most ``timeout`` per tick."""

    name: str
    every: timedelta
    timeout: timedelta
    step: Step


def cluster_loops(intervals: Intervals) -> tuple[Loop, ...]:
    """The leader's loops; per-tick timeouts are the earlier implementation's."""
    return (
        Loop("renewal", intervals.renewal, timedelta(minutes=5), renewal.scan),
        Loop("jobs", intervals.jobs, timedelta(minutes=2), jobs.process_pending),
        Loop("retries", intervals.retries, timedelta(minutes=2), jobs.retry_due),
        Loop("timeouts", intervals.timeouts, timedelta(minutes=2), jobs.reap_timeouts),
        Loop("lost_agents", intervals.timeouts, timedelta(minutes=2), agents.reap_lost),
        Loop(
            "agent_health",
            intervals.agent_health,
            timedelta(minutes=1),
            agents.update_liveness,
        ),
    )


def replica_loops(intervals: Intervals) -> tuple[Loop, ...]:
    """Every replica's loops: they refresh per-process caches and gauges."""
    return (
        Loop("crl_refresh", intervals.crl_refresh, timedelta(minutes=5), revocation.refresh_crls),
        Loop("gauges", intervals.gauges, timedelta(seconds=30), stats.summary),
    )


class Scheduler:
    """Runs the loops of one replica under ``supervisor``; see the module docstring."""

    def __init__(
        self,
        services: Services,
        intervals: Intervals | None = None,
        *,
        supervisor: Supervisor | None = None,
        lock: str = LOCK,
    ) -> None:
        self._services = services
        self._intervals = intervals or Intervals()
        self._supervisor = supervisor or Supervisor()
        self._lock = lock
        self._leader = False

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the lock and runs the cluster loops right now."""
        return self._leader

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; started as soon as the replica loops are, without waiting
        for an election. Cancellation stops every loop and releases the lock."""
        async with trio.open_nursery() as nursery:
            for loop in replica_loops(self._intervals):
                nursery.start_soon(self._repeat, loop)
            task_status.started()
            await self._elect()

    async def _elect(self) -> None:
        while True:
            try:
                async with self._services.store.leadership(self._lock) as claim:
                    self._supervisor.succeeded(ELECTION)
                    if claim.held:
                        await self._lead(claim)
            except StoreError as exc:
                self._supervisor.failed(ELECTION, exc)
            await trio.sleep(self._intervals.election.total_seconds())

    async def _lead(self, claim: Leadership) -> None:
        """Run the cluster loops until the lock is lost (returns) or the task is cancelled."""
        log.info("scheduler leadership acquired", lock=self._lock)
        lost = False
        try:
            async with trio.open_nursery() as nursery:
                self._leader = True
                SCHEDULER_LEADER.set(1)
                for loop in cluster_loops(self._intervals):
                    nursery.start_soon(self._repeat, loop)
                while await claim.check():
                    self._supervisor.succeeded(ELECTION)
                    await trio.sleep(self._intervals.election.total_seconds())
                lost = True
                nursery.cancel_scope.cancel()
        finally:
            self._leader = False
            SCHEDULER_LEADER.set(0)
            if lost:
                log.warning("scheduler leadership lost; loops stopped", lock=self._lock)
            else:
                log.info("scheduler leadership released", lock=self._lock)

    async def _repeat(self, loop: Loop) -> None:
        services = self._services

        async def step() -> None:
            result = await loop.step(services)
            log.debug("scheduler step done", loop=loop.name, result=result)

        await self._supervisor.loop(
            loop.name,
            step,
            every=loop.every.total_seconds(),
            timeout=loop.timeout.total_seconds(),
        )
