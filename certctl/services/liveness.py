"""Coalesced liveness: agents seen by long polls, written in one statement per interval.

A long-polling agent is seen twice a cycle (when its poll arrives and when it ends);
writing each sighting would cost a database round trip per poll, which is most of what an
idle agent costs. Sightings wait here instead, one per agent (the newest time, the newest
non-empty facts), and a supervised loop writes them every ``interval`` with
``Store.record_seen``. The Online/Offline decision allows for the delay: an agent is
Offline only once silent for ``CERTCTL_AGENT_OFFLINE_AFTER`` plus ``interval``
(``Services.offline_after``). A failed write keeps its sightings for the next attempt; a
sighting arriving meanwhile wins over the one it replaces.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final

from certctl.protocol import HostFacts
from certctl.services import metrics
from certctl.store.base import SIGHTING_FACTS, Sighting, Store

FLUSH_INTERVAL: Final = timedelta(seconds=1)


class Sightings:
    """The sightings not yet written (at most one per agent, so bounded by the fleet)."""

    def __init__(self, *, interval: timedelta = FLUSH_INTERVAL) -> None:
        self.interval = interval
        self._pending: dict[str, Sighting] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def seen(self, agent_id: str, at: datetime, facts: HostFacts | None = None) -> None:
        sent = facts.present() if facts is not None else {}
        self._merge(Sighting(agent_id, at, **sent))

    def _merge(self, sighting: Sighting) -> None:
        older = self._pending.get(sighting.agent_id)
        if older is not None:
            if older.at > sighting.at:
                older, sighting = sighting, older
            kept = {name: getattr(older, name) for name in SIGHTING_FACTS}
            kept.update({n: getattr(sighting, n) for n in SIGHTING_FACTS if getattr(sighting, n)})
            sighting = replace(sighting, **kept)
        self._pending[sighting.agent_id] = sighting

    async def flush(self, store: Store) -> int:
        """Write what is pending in one statement; returns how many agents it updated."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            written = await store.record_seen(list(batch.values()))
        except BaseException:
            newer, self._pending = self._pending, batch
            for sighting in newer.values():
                self._merge(sighting)
            raise
        metrics.SIGHTINGS_WRITTEN.inc(written)
        return written
