"""Waking long polls: per-agent wake-ups, the agents known to have no work, the relay.

A waiting poll (``services.agents.poll``) holds no database resource: it sleeps on its
agent's wake-up here. Whatever makes a job claimable for an agent (a deployment queued,
a retry due, a key job awaiting a CSR) calls ``announce`` once the write has committed;
that wakes the agent's polls in this process and queues the agent id for the relay, which
publishes it on one channel (PostgreSQL ``NOTIFY``) so every other replica wakes its own
polls of that agent. A woken poll checks the database once.

An agent whose last check found nothing, and for which nothing was announced since, is
*known idle*: its next poll goes straight to waiting, so an idle fleet costs no database
query per poll. The mark is dropped by any announcement for the agent, by the relay
(re)subscribing (it may have missed messages while it was not listening) and after
``IDLE_TTL`` as a last resort against a write path that forgot to announce.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Final, NoReturn

import trio

from certctl.services import metrics
from certctl.store.base import MESSAGE_BYTES, Store, Subscription

CHANNEL: Final = "certctl_work"
IDLE_TTL: Final = 300.0
"""Seconds an agent stays known idle without a fresh database check."""


class Waiter:
    """One waiting poll: woken by an announcement for its agent or by ``close``."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = trio.Event()

    def arm(self) -> None:
        """Start listening afresh (before a database check, so a wake-up during the check
        is not lost)."""
        if self.event.is_set():
            self.event = trio.Event()


class Wakeups:
    """One process's waiting polls, bounded by ``max_waiting``; times are trio's clock."""

    def __init__(self, *, max_waiting: int = 10_000, idle_ttl: float = IDLE_TTL) -> None:
        self.max_waiting = max_waiting
        self._idle_ttl = idle_ttl
        self._waiters: dict[str, set[Waiter]] = {}
        self._waiting = 0
        self._idle: dict[str, float] = {}
        self._outbox: set[str] = set()
        self._outbox_ready = trio.Event()
        self.closed = False
        self.listening = False

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextmanager
    def slot(self, agent_id: str) -> Iterator[Waiter | None]:
        """A ``Waiter`` for one poll of ``agent_id``, or ``None`` when this process
        already holds ``max_waiting`` polls or is shutting down (the poll then answers at
        once, as a short poll)."""
        if self.closed or self._waiting >= self.max_waiting:
            yield None
            return
        waiter = Waiter()
        self._waiters.setdefault(agent_id, set()).add(waiter)
        self._waiting += 1
        try:
            yield waiter
        finally:
            self._waiting -= 1
            waiters = self._waiters[agent_id]
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[agent_id]

    # -- known idle -----------------------------------------------------------------

    def known_idle(self, agent_id: str) -> bool:
        if not self.listening:
            return False
        marked = self._idle.get(agent_id)
        if marked is None:
            return False
        if trio.current_time() - marked >= self._idle_ttl:
            del self._idle[agent_id]
            return False
        return True

    def checking(self, agent_id: str) -> None:
        """A database check for ``agent_id`` starts: if it finds nothing and nothing is
        announced meanwhile, the agent is known idle from now on."""
        self._idle[agent_id] = trio.current_time()

    def busy(self, agent_id: str) -> None:
        """The check found work (or failed): the next poll must check again."""
        self._idle.pop(agent_id, None)

    # -- waking -------------------------------------------------------------------------

    def wake(self, agent_ids: Iterable[str]) -> None:
        """Work may be claimable for these agents: wake their polls here."""
        for agent_id in agent_ids:
            self._idle.pop(agent_id, None)
            for waiter in self._waiters.get(agent_id, ()):
                waiter.event.set()

    def wake_all(self) -> None:
        """Every poll checks once more and no agent is known idle: announcements may
        have been missed (the relay was not subscribed)."""
        self._idle.clear()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.event.set()

    def close(self) -> None:
        """Shutting down: every waiting poll answers now and no new one waits."""
        self.closed = True
        self.wake_all()

    def announce(self, agent_ids: Iterable[str]) -> None:
        """Wake ``agent_ids`` here and queue them for the other replicas."""
        ids = set(agent_ids)
        if not ids:
            return
        self.wake(ids)
        self._outbox |= ids
        self._outbox_ready.set()

    # -- the relay ---------------------------------------------------------------------

    async def publish_step(self, store: Store, origin: str) -> None:
        """Wait for announcements and publish them (a supervised loop of ``every=0``).
        If publishing fails the ids stay queued for the retry."""
        await self._outbox_ready.wait()
        batch = set(self._outbox)
        await store.publish(CHANNEL, encode(origin, batch))
        metrics.WORK_ANNOUNCEMENTS.labels("sent").inc(len(batch))
        self._outbox -= batch
        if not self._outbox:
            self._outbox_ready = trio.Event()

    async def relay(self, store: Store, origin: str) -> None:
        """Subscribe and wake the polls of every agent another replica announces, until
        the subscription breaks (raises ``StoreUnavailable``; the supervisor restarts it).
        Each (re)subscription wakes every poll once, for what may have been missed, and
        no agent counts as known idle while the relay is not listening."""
        try:
            async with store.subscribe(CHANNEL) as subscription:
                self.wake_all()
                self.listening = True
                await self._relay(subscription, origin)
        finally:
            self.listening = False

    async def _relay(self, subscription: Subscription, origin: str) -> NoReturn:
        while True:
            sender, ids = decode(await subscription.receive())
            if not sender:
                metrics.WORK_ANNOUNCEMENTS.labels("malformed").inc()
            elif sender != origin:
                metrics.WORK_ANNOUNCEMENTS.labels("received").inc(len(ids))
                self.wake(ids)


def encode(origin: str, agent_ids: Iterable[str]) -> list[str]:
    """Messages of ``origin:id,id,...``, each within ``MESSAGE_BYTES``."""
    messages: list[str] = []
    line = ""
    for agent_id in sorted(agent_ids):
        if line and len(line) + len(agent_id) + 1 > MESSAGE_BYTES:
            messages.append(line)
            line = ""
        line = f"{line},{agent_id}" if line else f"{origin}:{agent_id}"
    if line:
        messages.append(line)
    return messages


def decode(message: str) -> tuple[str, list[str]]:
    """``(origin, agent ids)``; a malformed message (another writer on the channel) has
    no origin and wakes nobody."""
    origin, sep, ids = message.partition(":")
    if not sep:
        return "", []
    return origin, [agent_id for agent_id in ids.split(",") if agent_id]
