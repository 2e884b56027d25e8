"""Per-caller token buckets: ``rate`` requests per second with bursts up to ``burst``.

Keyed by the authenticated caller (operator key name or agent id), which is why the limit
runs after authentication: the earlier implementation limited before auth, so every
bucket was per IP and one NAT'd fleet shared a single budget.
"""

from __future__ import annotations

import math

import trio


class RateLimiter:
    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str) -> float:
        """Take one token for ``key``: 0 when allowed, else seconds until one is free."""
        now = trio.current_time()
        tokens, stamp = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._buckets.clear()
        self._buckets[key] = (tokens - 1, now)
        return 0.0


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))
