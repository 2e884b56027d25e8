"""Exponential backoff with an injected jitter source.

One schedule serves agent polling, job retries and post-deploy verification. The jitter
source is a parameter so that simulations are reproducible and tests can pin the extremes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """``initial * multiplier**(attempt-1)``, capped, then shrunk by up to ``jitter``.

    Jitter only ever shortens a delay (``delay * (1 - jitter * u)`` for ``u`` in [0, 1)),
    so the cap is a hard upper bound that operators can reason about.
    """

    initial: float
    cap: float
    multiplier: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.initial <= 0:
            raise ValueError(f"Backoff initial must be > 0 seconds, got {self.initial}.")
        if self.cap < self.initial:
            raise ValueError(f"Backoff cap ({self.cap}) must be >= initial ({self.initial}).")
        if self.multiplier < 1:
            raise ValueError(f"Backoff multiplier must be >= 1, got {self.multiplier}.")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff jitter must be within [0, 1], got {self.jitter}.")

    def delay(self, attempt: int, random: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = the first retry).

        ``random`` returns a float in [0, 1); pass ``random.Random(seed).random`` for a
        reproducible schedule.
        """
        if attempt < 1:
            raise ValueError(f"Backoff attempt must be >= 1, got {attempt}.")
        try:
            base = min(self.cap, self.initial * self.multiplier ** (attempt - 1))
        except OverflowError:  # a long outage's attempt count; the cap applies anyway
            base = self.cap
        return base * (1 - self.jitter * random())
