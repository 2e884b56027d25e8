"""One supervisor for every background loop of a server process: nothing dies silently.

A loop is a step run on an interval (scheduler steps, the audit flusher, CRL refresh,
gauges, the embedded PostgreSQL watchdog) or a long-lived task (the scheduler's
election). Whatever a step raises is logged with its traceback, counted in
``certctl_background_failures_total{loop}`` and retried with exponential backoff (from one
second up to the loop's interval, or a minute); it never reaches the nursery, so it can
never cancel another loop or the HTTP listener. That is what the earlier arrangement got
wrong: one exception in the audit writer ended the app's nursery, released the scheduler
lock and stopped audit rows while ``/ready`` still said 200.

``unhealthy()`` names the loops that have been failing for longer than ``unhealthy_after``
(from the first failure of a run of failures to now); ``/ready`` answers 503 while any
is listed, so an orchestrator stops routing to a replica whose background work is stuck.
A loop that stops (a cluster loop when leadership moves elsewhere) takes its health
entry with it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, NoReturn

import trio

from certctl.core.backoff import Backoff
from certctl.logging import get_logger
from certctl.server.metrics import BACKGROUND_FAILURES
from certctl.store.errors import StoreUnavailable

log = get_logger(__name__)

Step = Callable[[], Awaitable[object]]

UNHEALTHY_AFTER: Final = 60.0
"""Seconds a loop may keep failing before ``/ready`` reports it."""
RETRY_CAP: Final = 60.0
"""Longest pause between retries of a failing step, unless its interval is shorter."""


@dataclass(slots=True)
class Health:
    """A loop's recent record; times are ``trio.current_time()`` readings."""

    failures: int = 0
    failing_since: float | None = None
    last_error: str = ""


class Supervisor:
    def __init__(self, *, unhealthy_after: float = UNHEALTHY_AFTER) -> None:
        self.unhealthy_after = unhealthy_after
        self._health: dict[str, Health] = {}

    # -- what /ready reads ---------------------------------------------------------

    def health(self, name: str) -> Health | None:
        return self._health.get(name)

    def unhealthy(self) -> list[str]:
        """Loops failing without a success for longer than ``unhealthy_after``."""
        now = trio.current_time()
        return sorted(
            name
            for name, health in self._health.items()
            if health.failing_since is not None
            and now - health.failing_since >= self.unhealthy_after
        )

    # -- what loops call -------------------------------------------------------------

    def succeeded(self, name: str) -> None:
        """Mark ``name`` healthy; long-lived steps call it once they are doing their work."""
        health = self._health.setdefault(name, Health())
        health.failures = 0
        health.failing_since = None

    def failed(self, name: str, error: BaseException) -> int:
        """Record a failure of ``name``: logged, counted; returns the consecutive count."""
        health = self._health.setdefault(name, Health())
        health.failures += 1
        if health.failing_since is None:
            health.failing_since = trio.current_time()
        health.last_error = f"{type(error).__name__}: {error}"[:500]
        BACKGROUND_FAILURES.labels(name).inc()
        if isinstance(error, StoreUnavailable):
            log.warning(
                "background step failed: database unavailable",
                loop=name,
                error=str(error),
                failures=health.failures,
            )
        else:
            log.error("background step failed", loop=name, failures=health.failures, exc_info=error)
        return health.failures

    async def loop(
        self, name: str, step: Step, *, every: float, timeout: float | None = None
    ) -> NoReturn:
        """Run ``step`` now and then every ``every`` seconds, for ever.

        Ticks never overlap: ticks that fell due while one ran are skipped with a warning.
        A step that raises or outlasts ``timeout`` is retried after a backoff instead of
        waiting for its next tick. ``every`` of 0 runs the step back to back (a step that
        waits for its own work, like the audit flusher).
        """
        backoff = Backoff(initial=1.0, cap=min(RETRY_CAP, every) if every > 0 else RETRY_CAP)
        self._health.setdefault(name, Health())
        due = trio.current_time()
        try:
            while True:
                failures = await self._attempt(name, step, timeout)
                if failures:
                    await trio.sleep(backoff.delay(failures, _no_jitter))
                    continue
                if every <= 0:
                    await trio.sleep(0)
                    continue
                late = trio.current_time() - due
                skipped = int(late // every)
                if skipped:
                    log.warning(
                        "background tick overran its interval; skipping ticks",
                        loop=name,
                        skipped=skipped,
                    )
                due += (skipped + 1) * every
                await trio.sleep_until(due)
        finally:
            self._health.pop(name, None)

    async def keep_running(self, name: str, task: Callable[[], Awaitable[object]]) -> NoReturn:
        """Run a long-lived ``task``; whenever it raises or returns, start it again after a
        backoff. It counts as healthy again once a restart has run for ``RETRY_CAP``
        seconds, and the backoff starts afresh then."""
        backoff = Backoff(initial=1.0, cap=RETRY_CAP)
        attempt = 0
        try:
            while True:
                settled = False

                async def settle() -> None:
                    nonlocal settled
                    await trio.sleep(RETRY_CAP)
                    settled = True
                    self.succeeded(name)

                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(settle)
                        await task()
                        nursery.cancel_scope.cancel()
                except Exception as exc:
                    self.failed(name, exc)
                else:
                    log.warning("background task ended; starting it again", loop=name)
                attempt = 1 if settled else attempt + 1
                await trio.sleep(backoff.delay(attempt, _no_jitter))
        finally:
            self._health.pop(name, None)

    async def _attempt(self, name: str, step: Step, timeout: float | None) -> int:
        """Run one tick; 0 when it succeeded, else the consecutive failure count."""
        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                await step()
        except trio.TooSlowError:
            return self.failed(name, TimeoutError(f"tick took longer than {timeout:g} s"))
        except Exception as exc:
            return self.failed(name, exc)
        self.succeeded(name)
        return 0


def _no_jitter() -> float:
    """Retries of one process's own loops need no spreading: nothing else retries in step."""
    return 0.0
