"""``Services``: what every use case needs (store, clock, issuers, randomness, ids).

Time, randomness and identifiers come from here and nowhere else, so the fleet simulator
can drive the same code in virtual time with a seeded ``random.Random`` and replay a run
exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from certctl.core.clock import Clock
from certctl.core.model import ActorType, KeyRole
from certctl.services.issuers import IssuerPool
from certctl.services.liveness import Sightings
from certctl.services.wakeups import Wakeups
from certctl.store.base import Store


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked: an operator key (by name, with its role), an agent, or the control plane.

    ``role`` is ``None`` for agents: they never call operator routes.
    """

    name: str
    type: ActorType
    role: KeyRole | None = None
    agent_id: str | None = None


SYSTEM = Actor("certctl", ActorType.SYSTEM, role=KeyRole.ADMIN)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long jobs may wait and agents may stay silent (from the settings)."""

    awaiting_csr: timedelta = timedelta(hours=24)
    awaiting_approval: timedelta = timedelta(hours=168)
    agent_offline_after: timedelta = timedelta(minutes=5)


@dataclass(slots=True)
class Services:
    store: Store
    clock: Clock
    issuers: IssuerPool
    timeouts: Timeouts = field(default_factory=Timeouts)
    rng: random.Random = field(default_factory=random.SystemRandom)
    wakeups: Wakeups = field(default_factory=Wakeups)
    sightings: Sightings = field(default_factory=Sightings)

    def now(self) -> datetime:
        return self.clock.now()

    @property
    def offline_after(self) -> timedelta:
        """How long an agent may be silent before it is Offline: the setting, plus the
        delay of a sighting waiting for its coalesced write."""
        return self.timeouts.agent_offline_after + self.sightings.interval

    def new_id(self, prefix: str) -> str:
        """``<prefix>-<24 hex digits>``: 96 random bits, so replicas never collide."""
        return f"{prefix}-{self.rng.getrandbits(96):024x}"

    def jitter(self) -> float:
        return self.rng.random()
