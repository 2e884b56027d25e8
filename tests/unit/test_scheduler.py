"""The scheduler in virtual time: ``autojump_clock`` drives trio, and the services' clock
follows it, so hours of loops run in milliseconds."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import trio
from conftest_store import T0, certificate, issuer, job, seed
from structlog.testing import capture_logs

from certctl.core.clock import VirtualClock
from certctl.core.model import AgentStatus, JobStatus
from certctl.server.metrics import BACKGROUND_FAILURES
from certctl.server.scheduler import LOCK, Intervals, Scheduler
from certctl.server.supervisor import Supervisor
from certctl.services import agents, jobs, renewal, revocation, stats
from certctl.services.context import Services
from certctl.services.issuers import IssuerDefaults, IssuerPool
from certctl.services.rules import DOMAIN_RULES
from certctl.store.base import Leadership
from certctl.store.errors import StoreUnavailable
from certctl.store.memory import MemoryStore

S = timedelta(seconds=1)
INTERVALS = Intervals(
    renewal=60 * S,
    jobs=10 * S,
    retries=20 * S,
    timeouts=30 * S,
    agent_health=15 * S,
    crl_refresh=50 * S,
    gauges=25 * S,
    election=5 * S,
)
STEPS = (
    (renewal, "scan"),
    (jobs, "process_pending"),
    (jobs, "retry_due"),
    (jobs, "reap_timeouts"),
    (agents, "reap_lost"),
    (agents, "update_liveness"),
    (revocation, "refresh_crls"),
    (stats, "summary"),
)
Ticks = dict[str, list[float]]


def services(store: MemoryStore, tmp_path: Path, *, clock_offset: timedelta = 0 * S) -> Services:
    return Services(
        store=store,
        clock=VirtualClock(T0 + clock_offset, trio.current_time),
        issuers=IssuerPool(IssuerDefaults(data_dir=tmp_path)),
    )


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> Ticks:
    """Every scheduler step replaced by one that records when it ran (seconds since 0)."""
    seen: Ticks = defaultdict(list)
    for module, name in STEPS:
        monkeypatch.setattr(module, name, _recorder(seen, name))
    return seen


def _recorder(seen: Ticks, name: str) -> Callable[[Services], Awaitable[int]]:
    async def record(_: Services) -> int:
        seen[name].append(trio.current_time())
        return 0

    record.__name__ = name
    return record


def failures_of(loop: str) -> float:
    """``certctl_background_failures_total{loop}`` as this test left it (counted since the
    fixture reset it)."""
    return BACKGROUND_FAILURES.labels(loop)._value.get() - _BASELINE.get(loop, 0.0)


_BASELINE: dict[str, float] = {}


@pytest.fixture(autouse=True)
def _counter_baseline() -> None:
    for loop in ("jobs", "timeouts"):
        _BASELINE[loop] = BACKGROUND_FAILURES.labels(loop)._value.get()


def every(period: float, until: float) -> list[float]:
    return [n * period for n in range(int(until // period) + 1)]


@asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        yield
        nursery.cancel_scope.cancel()


async def test_each_loop_runs_at_start_then_on_its_interval(
    autojump_clock: trio.testing.MockClock, ticks: Ticks, tmp_path: Path
) -> None:
    store = MemoryStore(DOMAIN_RULES)
    scheduler = Scheduler(services(store, tmp_path), INTERVALS)
    async with running(scheduler):
        await trio.sleep(95)
        assert scheduler.is_leader
    assert dict(ticks) == {
        "scan": every(60, 95),
        "process_pending": every(10, 95),
        "retry_due": every(20, 95),
        "reap_timeouts": every(30, 95),
        "reap_lost": every(30, 95),
        "update_liveness": every(15, 95),
        "refresh_crls": every(50, 95),
        "summary": every(25, 95),
    }
    assert not scheduler.is_leader
    async with store.leadership(LOCK) as claim:
        assert claim.held, "a cancelled scheduler releases its lock"


async def test_a_failing_step_is_logged_and_the_loop_goes_on(
    autojump_clock: trio.testing.MockClock,
    ticks: Ticks,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures: list[Exception] = [StoreUnavailable("PostgreSQL is down."), RuntimeError("bug")]

    async def flaky(_: Services) -> int:
        ticks["flaky"].append(trio.current_time())
        if failures:
            raise failures.pop(0)
        return 0

    async def broken(_: Services) -> int:
        raise RuntimeError("always")

    monkeypatch.setattr(jobs, "process_pending", flaky)
    monkeypatch.setattr(jobs, "reap_timeouts", broken)
    scheduler_supervisor = Supervisor()
    scheduler = Scheduler(
        services(MemoryStore(DOMAIN_RULES), tmp_path), INTERVALS, supervisor=scheduler_supervisor
    )
    with capture_logs() as logs:
        async with running(scheduler):
            await trio.sleep(35)
            assert scheduler_supervisor.unhealthy() == []  # failing, but not for 60 s yet
            await trio.sleep(30)
            assert scheduler_supervisor.unhealthy() == ["timeouts"]
    # Retried after 1 s and 2 s, then back on its interval.
    assert ticks["flaky"] == [0, 1, 3, 10, 20, 30, 40, 50, 60]
    assert ticks["reap_lost"] == [0, 30, 60], "a failing loop does not hold up another"
    problems = Counter(
        (e["log_level"], e["event"], e["loop"], "exc_info" in e)
        for e in logs
        if e["log_level"] in ("warning", "error")
    )
    assert problems == {
        ("warning", "background step failed: database unavailable", "jobs", False): 1,
        ("error", "background step failed", "jobs", True): 1,
        # 0, 1, 3, 7, 15, 31 and 61 s: the backoff doubles up to the loop's 30 s interval.
        ("error", "background step failed", "timeouts", True): 7,
    }
    assert failures_of("timeouts") == 7


async def test_a_slow_tick_times_out_and_the_ticks_it_covered_are_skipped(
    autojump_clock: trio.testing.MockClock,
    ticks: Ticks,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def stuck_once(_: Services) -> int:
        ticks["stuck"].append(trio.current_time())
        if len(ticks["stuck"]) == 1:
            await trio.sleep_forever()
        return 0

    monkeypatch.setattr(jobs, "process_pending", stuck_once)
    with capture_logs() as logs:
        async with running(Scheduler(services(MemoryStore(DOMAIN_RULES), tmp_path), INTERVALS)):
            await trio.sleep(145)
    # The job loop's tick timeout is 2 minutes: the timed-out tick is retried a second
    # later, and the ticks due at 10..120 s are skipped.
    assert ticks["stuck"] == [0, 121, 130, 140]
    problems = [
        (e["log_level"], e["event"], e.get("skipped"))
        for e in logs
        if e["log_level"] in ("warning", "error")
    ]
    assert problems == [
        ("error", "background step failed", None),
        ("warning", "background tick overran its interval; skipping ticks", 12),
    ]


async def test_loops_stop_when_leadership_is_lost_and_resume_when_regained(
    autojump_clock: trio.testing.MockClock, ticks: Ticks, tmp_path: Path
) -> None:
    store = MemoryStore(DOMAIN_RULES)
    scheduler = Scheduler(services(store, tmp_path), INTERVALS)
    with capture_logs() as logs:
        async with running(scheduler):
            await trio.sleep(12)
            store.break_leadership(LOCK)
            async with store.leadership(LOCK) as rival:
                assert rival.held
                await trio.sleep(4)  # t=16: the scheduler's check at t=15 saw the loss
                assert not scheduler.is_leader
                await trio.sleep(26)  # t=42
            await trio.sleep(4)  # t=46: the election at t=45 won the lock back
            assert scheduler.is_leader
            await trio.sleep(14)  # t=60
    assert ticks["process_pending"] == [0, 10, 45, 55]
    assert ticks["summary"] == [0, 25, 50], "replica loops run whoever leads"
    leadership = [e["event"] for e in logs if "leadership" in e["event"]]
    assert leadership == [
        "scheduler leadership acquired",
        "scheduler leadership lost; loops stopped",
        "scheduler leadership acquired",
        "scheduler leadership released",
    ]


class UnreachableOnce(MemoryStore):
    """A store whose first leadership claim finds the database down."""

    def __init__(self) -> None:
        super().__init__(DOMAIN_RULES)
        self.down = True

    @asynccontextmanager
    async def leadership(self, name: str) -> AsyncIterator[Leadership]:
        if self.down:
            self.down = False
            raise StoreUnavailable("PostgreSQL is unreachable.")
        async with super().leadership(name) as claim:
            yield claim


async def test_an_election_the_database_missed_is_retried(
    autojump_clock: trio.testing.MockClock, ticks: Ticks, tmp_path: Path
) -> None:
    scheduler = Scheduler(services(UnreachableOnce(), tmp_path), INTERVALS)
    with capture_logs() as logs:
        async with running(scheduler):
            await trio.sleep(1)
            assert not scheduler.is_leader
            await trio.sleep(5)
            assert scheduler.is_leader
    assert ticks["process_pending"] == [5]
    warnings = [(e["event"], e["loop"]) for e in logs if e["log_level"] == "warning"]
    assert warnings == [("background step failed: database unavailable", "scheduler_election")]


async def test_the_real_loops_move_jobs_and_agents(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """No step replaced: a Pending renewal goes to its agent, a silent agent goes Offline."""
    store = MemoryStore(DOMAIN_RULES)
    await seed(store)
    await store.update_issuer(replace(issuer(), enabled=False))  # no CA key generation here
    await store.create_certificate(certificate(target_ids=("target-1",)))
    await store.create_jobs([job(now=T0)])
    context = services(store, tmp_path, clock_offset=timedelta(hours=1))
    with capture_logs() as logs:
        async with running(Scheduler(context, INTERVALS)):
            await trio.sleep(1)
    assert (await store.get_job("job-1")).status is JobStatus.AWAITING_CSR
    assert (await store.get_agent("agent-1")).status is AgentStatus.OFFLINE
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []
