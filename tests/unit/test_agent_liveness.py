"""The agent's liveness record and the verdict ``certctl healthcheck --role agent`` gives."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certctl.agent import liveness
from certctl.agent.liveness import Liveness, Unhealthy, judge

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
BEAT = timedelta(seconds=60)
LIMIT = BEAT * liveness.MISSED_BEATS + liveness.GRACE


def record(*, attempt: datetime = T0, success: datetime | None = T0, error: str = "") -> Liveness:
    return Liveness(4242, BEAT, T0 - timedelta(seconds=5), attempt, success, error)


def test_a_recent_answer_is_healthy() -> None:
    assert judge(record(), T0 + BEAT, running=True).startswith("healthy: agent pid 4242")


def test_a_process_that_is_gone_is_unhealthy_whatever_the_record_says() -> None:
    with pytest.raises(Unhealthy, match=r"pid 4242.*not running"):
        judge(record(), T0, running=False)


def test_a_loop_silent_past_the_limit_is_stuck() -> None:
    judge(record(), T0 + LIMIT, running=True)
    with pytest.raises(Unhealthy, match="stuck"):
        judge(record(), T0 + LIMIT + timedelta(seconds=1), running=True)


def test_a_control_plane_silent_past_the_limit_is_unhealthy_with_the_last_error() -> None:
    beats = record(attempt=T0 + LIMIT, success=T0, error="503 from the server")
    judge(beats, T0 + LIMIT, running=True)
    with pytest.raises(Unhealthy, match=r"for .* s: 503 from the server"):
        judge(beats, T0 + LIMIT + timedelta(seconds=1), running=True)


def test_no_answer_yet_is_starting_within_the_limit_and_unhealthy_after() -> None:
    waiting = record(success=None, error="connection refused")
    assert judge(waiting, T0, running=True).startswith("starting:")
    late = T0 - timedelta(seconds=5) + LIMIT + timedelta(seconds=1)
    with pytest.raises(Unhealthy, match=r"since the agent started .*connection refused"):
        judge(record(attempt=late, success=None, error="connection refused"), late, running=True)


def test_the_record_round_trips_through_its_file(tmp_path: Path) -> None:
    written = record(success=None, error="no route")
    liveness.record(tmp_path, written)
    assert liveness.read(tmp_path) == written
    assert (tmp_path / liveness.FILE_NAME).stat().st_mode & 0o777 == 0o600


def test_a_missing_or_broken_record_is_unhealthy_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(Unhealthy, match="has not run a heartbeat"):
        liveness.read(tmp_path)
    (tmp_path / liveness.FILE_NAME).write_text('{"pid": 1}')
    with pytest.raises(Unhealthy, match="not a liveness record"):
        liveness.read(tmp_path)


def test_pid_running_tells_this_process_from_a_free_pid() -> None:
    assert liveness.pid_running(os.getpid())
    assert not liveness.pid_running(2**22 + 1)  # above pid_max's ceiling
