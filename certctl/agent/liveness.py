"""The agent's liveness record, and the judgement ``certctl healthcheck --role agent`` makes.

The heartbeat loop rewrites ``liveness.json`` in the state directory after every attempt,
so a probe needs nothing but the file: no ``pgrep`` (the earlier agent image probed with a
pattern that matched the probe's own shell, and had no ``procps`` to run it), no network
access of its own and no extra OS package. The record says when the loop last ran and when
the control plane last answered; the judgement is pure, so its rules are tested directly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from certctl.deploy import write_atomic

FILE_NAME = "liveness.json"
# A loop that missed this many heartbeats in a row is stuck; so is an agent whose control
# plane has not answered for that long (plus a grace for a slow start or a slow server).
MISSED_BEATS = 3
GRACE = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Liveness:
    """What the heartbeat loop last did; ``last_success`` is None until the first answer.

    ``started`` lets a probe tell an agent still waiting for its first answer (healthy
    for as long as a stuck one would be tolerated) from one that never got one."""

    pid: int
    interval: timedelta
    started: datetime
    last_attempt: datetime
    last_success: datetime | None
    last_error: str

    def encode(self) -> bytes:
        return json.dumps(
            {
                "pid": self.pid,
                "interval_seconds": self.interval.total_seconds(),
                "started": self.started.isoformat(),
                "last_attempt": self.last_attempt.isoformat(),
                "last_success": self.last_success.isoformat() if self.last_success else None,
                "last_error": self.last_error,
            },
            sort_keys=True,
        ).encode()


class Unhealthy(Exception):
    """The agent is not healthy; the message is the one line a probe prints."""


def record(state_dir: Path, liveness: Liveness) -> None:
    """Replace the record atomically: a probe reads the previous one or this one, whole."""
    write_atomic(state_dir / FILE_NAME, liveness.encode(), mode=0o600)


def read(state_dir: Path) -> Liveness:
    """The record in ``state_dir``, or ``Unhealthy`` saying why there is none to read."""
    path = state_dir / FILE_NAME
    try:
        raw = json.loads(path.read_bytes())
        success = raw["last_success"]
        return Liveness(
            pid=int(raw["pid"]),
            interval=timedelta(seconds=float(raw["interval_seconds"])),
            started=datetime.fromisoformat(raw["started"]),
            last_attempt=datetime.fromisoformat(raw["last_attempt"]),
            last_success=None if success is None else datetime.fromisoformat(success),
            last_error=str(raw["last_error"]),
        )
    except FileNotFoundError:
        raise Unhealthy(
            f"{path} does not exist: the agent has not run a heartbeat since it started "
            "(still starting, or not running with this CERTCTL_AGENT_STATE_DIR)."
        ) from None
    except OSError as exc:
        raise Unhealthy(
            f"cannot read {path} ({exc.strerror or exc}); run the probe as the agent's user."
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise Unhealthy(f"{path} is not a liveness record ({exc}); restart the agent.") from None


def judge(liveness: Liveness, now: datetime, *, running: bool) -> str:
    """The healthy verdict as one line, or ``Unhealthy``.

    ``running`` says whether ``liveness.pid`` is a live process here. Unhealthy: the
    process is gone, its heartbeat loop has not run for ``MISSED_BEATS`` intervals, or the
    control plane has not answered for as long (the agent cannot renew or deploy then).
    """
    limit = liveness.interval * MISSED_BEATS + GRACE
    if not running:
        raise Unhealthy(f"the agent (pid {liveness.pid}) is not running.")
    silent = now - liveness.last_attempt
    if silent > limit:
        raise Unhealthy(
            f"the agent's heartbeat loop last ran {_seconds(silent)} ago (limit "
            f"{_seconds(limit)}): it is stuck; restart it."
        )
    since = liveness.last_success
    if since is None and now - liveness.started <= limit:
        return (
            f"starting: agent pid {liveness.pid} is waiting for the control plane's first "
            f"answer ({liveness.last_error or 'no answer yet'})."
        )
    if since is None or now - since > limit:
        when = (
            f"since the agent started {_seconds(now - liveness.started)} ago"
            if since is None
            else f"for {_seconds(now - since)}"
        )
        raise Unhealthy(
            f"the control plane has not answered the agent's heartbeat {when}: "
            f"{liveness.last_error or 'no answer yet'}."
        )
    return f"healthy: agent pid {liveness.pid}, last heartbeat {_seconds(now - since)} ago."


def pid_running(pid: int) -> bool:
    """Whether ``pid`` names a live process in this pid namespace."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


def _seconds(delta: timedelta) -> str:
    return f"{max(delta.total_seconds(), 0.0):.0f} s"
