"""Backoff delays stay within (0, cap] for every schedule, attempt and jitter draw, and
jitter only ever shortens a delay that never falls below the jittered first one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from certctl.core.backoff import Backoff

seconds = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
schedules = st.builds(
    lambda initial, extra, multiplier, jitter: Backoff(
        initial, initial + extra, multiplier, jitter
    ),
    initial=seconds,
    extra=st.floats(0, 1e7),
    multiplier=st.floats(1, 100),
    jitter=st.floats(0, 1),
)
attempts = st.integers(1, 10_000)
draws = st.floats(0, 1, exclude_max=True)


@given(backoff=schedules, attempt=attempts, draw=draws)
def test_delay_is_positive_and_never_exceeds_the_cap(
    backoff: Backoff, attempt: int, draw: float
) -> None:
    delay = backoff.delay(attempt, lambda: draw)
    assert 0 < delay <= backoff.cap
    assert delay >= backoff.initial * (1 - backoff.jitter * draw)


@given(backoff=schedules, attempt=attempts)
def test_without_jitter_delays_never_shrink(backoff: Backoff, attempt: int) -> None:
    def draw() -> float:
        return 0.0

    assert backoff.delay(attempt, draw) <= backoff.delay(attempt + 1, draw)
    assert backoff.delay(1, draw) == backoff.initial
