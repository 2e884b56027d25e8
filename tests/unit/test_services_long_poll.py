"""certctl.services.agents.poll with services.wakeups: the long poll, held until work
appears for its agent, woken in this replica and across replicas sharing one store, never
querying the database for an agent known idle, bounded per process, ended by shutdown.

Time is trio's autojump clock: a poll of 55 s ends in virtual time, and every assertion
is about what happened (which wake-up, which query), never about how long it took.
"""

from __future__ import annotations

import inspect
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest_store import T0
from test_services_support import OPERATOR, PASSPHRASE, RegisteredAgent, ServiceEnv

from certctl.core.model import JobStatus, JobType
from certctl.protocol import HostFacts, WorkItem
from certctl.services import agents, certificates, jobs
from certctl.services.context import Services
from certctl.services.issuers import IssuerDefaults, IssuerPool
from certctl.services.wakeups import Wakeups, decode, encode
from certctl.store.errors import StoreUnavailable
from certctl.store.memory import MemoryStore

WAIT = 55


@pytest.fixture
async def env(tmp_path: Path) -> ServiceEnv:
    return await ServiceEnv.build(tmp_path)


def count_store_calls(store: Any, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every call of a public store coroutine, by name, from now on."""
    calls: Counter[str] = Counter()
    for name, member in inspect.getmembers(type(store)):
        if name.startswith("_") or not inspect.iscoroutinefunction(member):
            continue

        def counted(method: Callable[..., Any], name: str = name) -> Callable[..., Any]:
            async def call(*args: Any, **kwargs: Any) -> Any:
                calls[name] += 1
                return await method(*args, **kwargs)

            return call

        monkeypatch.setattr(store, name, counted(getattr(store, name)))
    return calls


@asynccontextmanager
async def relaying(services: Services, origin: str) -> AsyncIterator[trio.Nursery]:
    """The replica's two relay loops (as ``server.app`` runs them under its supervisor):
    publish its announcements, and wake its polls for the others' (resubscribing after a
    break). Yields once the relay listens."""
    async with trio.open_nursery() as nursery:

        async def publish() -> None:
            while True:
                await services.wakeups.publish_step(services.store, origin)

        async def relay() -> None:
            while True:
                try:
                    await services.wakeups.relay(services.store, origin)
                except StoreUnavailable:
                    await trio.sleep(1)

        nursery.start_soon(publish)
        nursery.start_soon(relay)
        await trio.testing.wait_all_tasks_blocked()
        assert services.wakeups.listening
        yield nursery
        nursery.cancel_scope.cancel()


class Poll:
    """One long poll run as a task: its answer once it returned."""

    def __init__(self) -> None:
        self.items: list[WorkItem] | None = None
        self.granted = -1.0
        self.started = 0.0
        self.ended = 0.0

    async def run(self, services: Services, agent: RegisteredAgent, wait: float = WAIT) -> None:
        self.started = trio.current_time()
        self.items, self.granted = await agents.poll(services, agent.agent, wait=wait)
        self.ended = trio.current_time()


async def waiting_poll(
    nursery: trio.Nursery, services: Services, agent: RegisteredAgent, wait: float = WAIT
) -> Poll:
    poll = Poll()
    nursery.start_soon(poll.run, services, agent, wait)
    await trio.testing.wait_all_tasks_blocked()
    assert poll.items is None, "the poll should be waiting"
    return poll


async def test_a_poll_with_work_answers_at_once(env: ServiceEnv, autojump_clock: Any) -> None:
    web = await env.agent("web", "target-1")
    await env.certificate("target-1")

    started = trio.current_time()
    items, granted = await agents.poll(env.services, web.agent, wait=WAIT)

    assert [i.type for i in items] == [JobType.ISSUANCE]
    assert granted == WAIT
    assert trio.current_time() == started  # no virtual second went by


async def test_work_queued_during_the_wait_ends_the_poll(
    env: ServiceEnv, autojump_clock: Any
) -> None:
    web = await env.agent("web", "target-1")
    other = await env.agent("other", "target-2")
    async with trio.open_nursery() as nursery:
        poll = await waiting_poll(nursery, env.services, web)
        bystander = await waiting_poll(nursery, env.services, other)
        assert env.services.wakeups.waiting == 2

        await trio.sleep(10)
        await env.certificate("target-1")  # an issuance job awaiting web's CSR
        await trio.testing.wait_all_tasks_blocked()

        assert poll.items is not None
        assert [i.type for i in poll.items] == [JobType.ISSUANCE]
        print(f"delivery after {poll.ended - poll.started - 10:.3f} s (virtual) of a {WAIT} s wait")
        assert poll.ended - poll.started < WAIT / 3  # woken, not timed out
        assert bystander.items is None  # another agent's poll is not woken
    assert bystander.items == []
    assert bystander.granted == WAIT


async def test_a_deployment_and_a_due_retry_wake_the_agent(
    env: ServiceEnv, autojump_clock: Any
) -> None:
    web = await env.agent("web", "target-1")
    cert_id, _ = await env.certificate("target-1")
    await env.issue(web, cert_id)  # the version's deployment is queued

    # The deployment fails; its retry, due later, is queued by the scheduler's step.
    (deployment,) = await agents.work(env.services, web.agent)
    await agents.report(
        env.services,
        web.agent,
        deployment.job_id,
        completed=False,
        error="reload failed",
        verification=None,
    )
    failed = await env.store.get_job(deployment.job_id)
    assert failed.status is JobStatus.FAILED
    assert failed.next_retry_at is not None
    async with trio.open_nursery() as nursery:
        poll = await waiting_poll(nursery, env.services, web)
        env.clock.set(failed.next_retry_at)
        assert await jobs.retry_due(env.services) == 1
        await trio.testing.wait_all_tasks_blocked()
    assert poll.items is not None
    assert [i.job_id for i in poll.items] == [deployment.job_id]
    assert poll.ended == poll.started

    await agents.report(
        env.services,
        web.agent,
        deployment.job_id,
        completed=True,
        error=None,
        verification=None,
    )
    async with trio.open_nursery() as nursery:
        poll = await waiting_poll(nursery, env.services, web)
        (queued,) = await certificates.deploy(env.services, OPERATOR, cert_id, target_id=None)
        await trio.testing.wait_all_tasks_blocked()
    assert poll.items is not None
    assert [i.job_id for i in poll.items] == [queued]


async def test_an_idle_agents_poll_that_times_out_makes_no_query(
    env: ServiceEnv, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = await env.agent("web", "target-1")
    calls = count_store_calls(env.store, monkeypatch)
    async with relaying(env.services, "replica-a"):
        first, granted = await agents.poll(env.services, web.agent, wait=WAIT)
        checked = dict(calls)
        assert first == []
        assert granted == WAIT
        assert checked["claim_jobs"] == 1

        # Known idle now: the next polls wait straight away and time out without a query.
        for _ in range(3):
            again, granted = await agents.poll(env.services, web.agent, wait=WAIT)
            assert again == []
            assert granted == WAIT
        assert dict(calls) == checked

        # An announcement drops the mark: the next poll checks again and finds the job.
        await env.certificate("target-1")
        items, _ = await agents.poll(env.services, web.agent, wait=WAIT)
        assert [i.type for i in items] == [JobType.ISSUANCE]


async def test_without_a_listening_relay_every_poll_checks(
    env: ServiceEnv, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that may have missed another's announcements trusts no idle mark."""
    web = await env.agent("web", "target-1")
    calls = count_store_calls(env.store, monkeypatch)
    for _ in range(3):
        assert (await agents.poll(env.services, web.agent, wait=WAIT))[0] == []
    assert calls["claim_jobs"] == 3


async def test_the_idle_mark_expires(
    env: ServiceEnv, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = await env.agent("web", "target-1")
    calls = count_store_calls(env.store, monkeypatch)
    env.services.wakeups = Wakeups(idle_ttl=100)
    async with relaying(env.services, "replica-a"):
        for _ in range(5):  # 0, 55 (idle), 110 (expired: checks), 165 (idle), 220 (checks)
            await agents.poll(env.services, web.agent, wait=WAIT)
    assert calls["claim_jobs"] == 3


def second_replica(env: ServiceEnv, tmp_path: Path) -> Services:
    """Another control-plane process on the same database: its own wake-ups."""
    return Services(
        store=env.store,
        clock=env.clock,
        issuers=IssuerPool(IssuerDefaults(data_dir=tmp_path, passphrase=PASSPHRASE)),
        rng=random.Random(2),
    )


async def test_work_created_on_one_replica_wakes_the_poll_held_by_another(
    env: ServiceEnv, autojump_clock: Any, tmp_path: Path
) -> None:
    web = await env.agent("web", "target-1")
    other = second_replica(env, tmp_path)
    async with relaying(env.services, "replica-a"), relaying(other, "replica-b"):
        await agents.poll(other, web.agent, wait=WAIT)  # now known idle on replica b
        async with trio.open_nursery() as nursery:
            poll = await waiting_poll(nursery, other, web)
            await env.certificate("target-1")  # on replica a
            await trio.testing.wait_all_tasks_blocked()
    assert poll.items is not None
    assert [i.type for i in poll.items] == [JobType.ISSUANCE]
    assert poll.ended == poll.started


async def test_a_resubscribed_relay_rechecks_every_waiting_poll(
    env: ServiceEnv, autojump_clock: Any, tmp_path: Path
) -> None:
    """Announcements published while a replica was not listening are lost to it; when
    it subscribes again, each of its waiting polls checks once."""
    assert isinstance(env.store, MemoryStore)
    web = await env.agent("web", "target-1")
    other = second_replica(env, tmp_path)
    async with relaying(env.services, "replica-a"), relaying(other, "replica-b"):
        await agents.poll(other, web.agent, wait=WAIT)  # known idle on replica b
        async with trio.open_nursery() as nursery:
            poll = await waiting_poll(nursery, other, web)
            env.store.break_subscriptions("certctl_work")  # b's relay is down for 1 s
            await env.certificate("target-1")
            await trio.testing.wait_all_tasks_blocked()
            assert poll.items is None  # the announcement reached nobody on b ...
            assert not other.wakeups.listening
        # ... and the resubscription woke the poll, which found the job.
    assert poll.items is not None
    assert [i.type for i in poll.items] == [JobType.ISSUANCE]
    assert 0 < poll.ended - poll.started < WAIT / 3


async def test_beyond_the_cap_polls_answer_at_once_as_short_polls(
    env: ServiceEnv, autojump_clock: Any
) -> None:
    env.services.wakeups = Wakeups(max_waiting=2)
    fleet = [await env.agent(f"web-{n}") for n in range(3)]
    async with trio.open_nursery() as nursery:
        held = [await waiting_poll(nursery, env.services, a) for a in fleet[:2]]
        items, granted = await agents.poll(env.services, fleet[2].agent, wait=WAIT)
        assert (items, granted) == ([], 0)
        assert env.services.wakeups.waiting == 2
    assert [p.granted for p in held] == [WAIT, WAIT]
    assert env.services.wakeups.waiting == 0
    # A slot freed is a slot to wait in again.
    assert (await agents.poll(env.services, fleet[2].agent, wait=WAIT))[1] == WAIT


async def test_closing_ends_waiting_polls_at_once_and_holds_no_new_one(
    env: ServiceEnv, autojump_clock: Any
) -> None:
    web = await env.agent("web")
    async with trio.open_nursery() as nursery:
        poll = await waiting_poll(nursery, env.services, web)
        env.services.wakeups.close()
        await trio.testing.wait_all_tasks_blocked()
        assert poll.items == []
        assert poll.ended == poll.started
    assert await agents.poll(env.services, web.agent, wait=WAIT) == ([], 0)


async def test_a_long_poll_is_the_heartbeat_recorded_in_one_write(
    env: ServiceEnv, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = [await env.agent(f"web-{n}") for n in range(5)]
    facts = HostFacts(hostname="moved.example.com", version="9.9.9")
    env.clock.set(T0.replace(year=T0.year + 1))
    async with trio.open_nursery() as nursery:
        for registered in fleet:
            nursery.start_soon(
                lambda a=registered: agents.poll(env.services, a.agent, wait=WAIT, facts=facts)
            )
    assert len(env.services.sightings) == 5
    calls = count_store_calls(env.store, monkeypatch)
    assert await env.services.sightings.flush(env.store) == 5
    assert dict(calls) == {"record_seen": 1}
    for registered in fleet:
        stored = await env.store.get_agent(registered.agent.id)
        assert stored.last_heartbeat_at == env.clock.now()
        assert (stored.hostname, stored.version) == ("moved.example.com", "9.9.9")


async def test_a_failed_liveness_write_keeps_its_sightings(env: ServiceEnv) -> None:
    web = await env.agent("web")
    sightings = env.services.sightings
    sightings.seen(web.agent.id, T0, HostFacts(hostname="a.example.com", version="1"))

    class Down(MemoryStore):
        async def record_seen(self, sightings: Any) -> int:
            raise StoreUnavailable("the database is down; try again.")

    down = Down.__new__(Down)
    with pytest.raises(StoreUnavailable):
        await sightings.flush(down)
    sightings.seen(web.agent.id, T0.replace(second=30))  # newer, no facts: keeps them
    assert len(sightings) == 1
    assert await sightings.flush(env.store) == 1
    stored = await env.store.get_agent(web.agent.id)
    assert stored.last_heartbeat_at == T0.replace(second=30)
    assert (stored.hostname, stored.version) == ("a.example.com", "1")
    assert await sightings.flush(env.store) == 0


def test_announcements_fit_the_channel_and_survive_the_round_trip() -> None:
    ids = {f"agent-{n:024x}" for n in range(1_000)}
    messages = encode("replica-1", ids)
    assert len(messages) > 1
    assert all(len(m.encode()) <= 4000 for m in messages)
    decoded = [decode(m) for m in messages]
    assert {origin for origin, _ in decoded} == {"replica-1"}
    assert {i for _, batch in decoded for i in batch} == ids
    assert decode("no separator") == ("", [])
