"""Failed authentication, throttled per client address and audited in aggregate.

A client that keeps presenting wrong keys must not cost a database lookup and an audit
row per attempt (one address managed 150 such requests a second, each an audit row). So:

- every failed authentication takes a token from the client address's bucket
  (``CERTCTL_AUTH_FAILURE_BURST`` tokens, refilled at ``CERTCTL_AUTH_FAILURES_PER_MINUTE``);
- while an address's bucket is empty, a request from it is answered 429 unless its
  credential proves good *without any database work*: an operator key or the bootstrap
  token (compared in memory) or an agent key already in the in-memory cache. A shared NAT
  address full of legitimate agents is therefore not locked out by one guesser behind it;
- failures and throttled requests are counted per address in windows of ``WINDOW``
  seconds, and each closed window becomes one audit row (``auth_failed``) with the counts,
  the window's bounds and a few of the paths tried.

The address is the TCP peer. Behind a reverse proxy every client shares the proxy's
address; certctl does not trust ``X-Forwarded-For``, because a client could set it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import trio

WINDOW: Final = 60.0
"""Seconds of failures summed into one audit row per address."""
MAX_PATHS: Final = 5
"""Distinct paths kept per window (the row shows what was probed, not every request)."""
MAX_ADDRESSES: Final = 100_000
"""Addresses tracked at once; beyond it the buckets start afresh (memory stays bounded)."""


@dataclass(slots=True)
class Window:
    """One address's failures in one window."""

    address: str
    opened: float
    first_at: datetime
    last_at: datetime
    failures: int = 0
    throttled: int = 0
    paths: list[str] = field(default_factory=list)


class AuthThrottle:
    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._windows: dict[str, Window] = {}

    def blocked(self, address: str) -> float:
        """Seconds until ``address`` may try a credential again; 0 when it may now."""
        tokens = self._tokens(address, trio.current_time())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def failed(self, address: str, path: str, at: datetime, *, throttled: bool) -> None:
        """Record a refused credential (``throttled``: refused without being checked)."""
        now = trio.current_time()
        if not throttled:
            tokens = self._tokens(address, now)
            if len(self._buckets) >= MAX_ADDRESSES and address not in self._buckets:
                self._buckets.clear()
            self._buckets[address] = (max(tokens - 1, 0.0), now)
        window = self._windows.get(address)
        if window is None:
            if len(self._windows) >= MAX_ADDRESSES:
                return  # counted in metrics still; the table is full of open windows
            window = self._windows[address] = Window(address, now, at, at)
        window.last_at = at
        if throttled:
            window.throttled += 1
        else:
            window.failures += 1
        if len(window.paths) < MAX_PATHS and path not in window.paths:
            window.paths.append(path[:256])

    def closed_windows(self, *, everything: bool = False) -> list[Window]:
        """Windows at least ``WINDOW`` old (or all of them), removed from the table."""
        now = trio.current_time()
        done = [w for w in self._windows.values() if everything or now - w.opened >= WINDOW]
        for window in done:
            del self._windows[window.address]
        return done

    def _tokens(self, address: str, now: float) -> float:
        tokens, stamp = self._buckets.get(address, (self.burst, now))
        return min(self.burst, tokens + (now - stamp) * self.rate)
