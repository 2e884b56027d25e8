"""The two sources of time and delay the shells hand to the core."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from certctl.core.backoff import Backoff
from certctl.core.clock import SystemClock, VirtualClock, require_aware


def test_require_aware() -> None:
    aware = datetime(2030, 1, 1, tzinfo=UTC)
    assert require_aware(aware, "x") is aware
    with pytest.raises(ValueError, match=r"^due must be timezone-aware; pass a datetime"):
        require_aware(datetime(2030, 1, 1), "due")


def test_system_clock_is_utc_wall_time() -> None:
    before = datetime.now(UTC)
    now = SystemClock().now()
    after = datetime.now(UTC)
    assert now.utcoffset() == timedelta(0)
    assert before <= now <= after


def test_virtual_clock_maps_a_monotonic_source_onto_the_epoch() -> None:
    readings = iter([100.0, 100.0, 3700.5])
    epoch = datetime(2030, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    clock = VirtualClock(epoch, lambda: next(readings))
    first = clock.now()
    assert first == datetime(2030, 1, 1, tzinfo=UTC)
    assert first.tzinfo is UTC
    assert clock.now() == datetime(2030, 1, 1, 1, 0, 0, 500_000, tzinfo=UTC)


def test_virtual_clock_refuses_a_naive_epoch() -> None:
    with pytest.raises(ValueError, match="VirtualClock epoch must be timezone-aware"):
        VirtualClock(datetime(2030, 1, 1), lambda: 0.0)


def no_jitter() -> float:
    return 0.0


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(initial=1, cap=10)
    assert [backoff.delay(n, no_jitter) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_backoff_survives_an_attempt_count_that_overflows_a_float() -> None:
    assert Backoff(initial=1, cap=16).delay(10_000, no_jitter) == 16


def test_jitter_only_shortens() -> None:
    backoff = Backoff(initial=8, cap=8, jitter=0.5)
    assert backoff.delay(1, lambda: 0.0) == 8
    assert backoff.delay(1, lambda: 0.5) == 6
    assert backoff.delay(1, lambda: 0.999) == pytest.approx(4.004)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": 0, "cap": 1}, "initial must be > 0"),
        ({"initial": 2, "cap": 1}, r"cap \(1\) must be >= initial \(2\)"),
        ({"initial": 1, "cap": 2, "multiplier": 0.5}, "multiplier must be >= 1"),
        ({"initial": 1, "cap": 2, "jitter": -0.1}, "jitter must be within"),
        ({"initial": 1, "cap": 2, "jitter": 1.5}, "jitter must be within"),
    ],
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)


def test_backoff_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1, got 0"):
        Backoff(initial=1, cap=2).delay(0, no_jitter)
