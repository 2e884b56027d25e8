"""``certctl agent``: run the agent forever, once, or as a dry run, and choose the exit code.

Exit codes are what systemd's ``Restart=on-failure`` acts on: 0 when the agent was
retired (restarting it would only be refused again) or stopped by SIGTERM/SIGINT, 1 for
a runtime failure, 2 for a configuration the agent refuses before any connection (an
``http://`` URL, an unreadable CA bundle, an empty bootstrap token, a host policy file
others can write). Every refusal is one line naming the variable and the fix.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

import trio

from certctl.agent.control_plane import (
    AgentRetired,
    ControlPlane,
    ControlPlaneError,
    Unauthorized,
)
from certctl.agent.http import HttpControlPlane
from certctl.agent.policy import load_policy
from certctl.agent.runner import AgentRunner, JobOutcome, TargetCheck
from certctl.agent.state import IDENTITY_FILE
from certctl.config import ConfigError, Settings

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

Say = Callable[[str], None]
_T = TypeVar("_T")


class Mode(StrEnum):
    RUN = "run"
    ONCE = "once"
    DRY_RUN = "dry-run"


def run(
    settings: Settings,
    mode: Mode,
    *,
    out: Say,
    err: Say,
    control_plane: ControlPlane | None = None,
) -> int:
    """The agent in ``mode``; results go to ``out``, the one-line refusal to ``err``.

    ``control_plane`` replaces the HTTPS client (tests); otherwise one is built from
    ``settings``, which checks the URL and the CA bundle before anything connects.
    """
    try:
        policy = load_policy(settings)
        if control_plane is None:
            client = HttpControlPlane.from_settings(settings)
            agent = AgentRunner(settings, client, policy=policy)
            return trio.run(_with_http, client, agent, mode, out, err)
        agent = AgentRunner(settings, control_plane, policy=policy)
        return trio.run(_run, agent, mode, out, err)
    except ConfigError as exc:
        err(f"certctl: {exc}")
        return EXIT_CONFIG


async def _with_http(
    client: HttpControlPlane, agent: AgentRunner, mode: Mode, out: Say, err: Say
) -> int:
    async with client:
        return await _run(agent, mode, out, err)


async def _run(agent: AgentRunner, mode: Mode, out: Say, err: Say) -> int:
    settings = agent.settings
    try:
        if mode is Mode.ONCE:
            outcomes = await _until_signal(agent.run_once)
            return EXIT_OK if outcomes is None else _print_jobs(outcomes, out)
        if mode is Mode.DRY_RUN:
            checks = await _until_signal(agent.dry_run)
            return EXIT_OK if checks is None else _print_checks(checks, out)
        await _until_signal(agent.start)
    except AgentRetired as exc:
        err(
            f"certctl: the control plane retired this agent ({exc}); exiting with status 0 so "
            "that it is not restarted."
        )
    except Unauthorized as exc:
        err(
            f"certctl: the control plane refused this agent's key ({exc}); if it was rebuilt, "
            f"move {settings.effective_agent_state_dir / IDENTITY_FILE} away to register again."
        )
        return EXIT_FAILED
    except ControlPlaneError as exc:
        err(f"certctl: {exc}")
        return EXIT_FAILED
    return EXIT_OK


async def _until_signal(work: Callable[[], Awaitable[_T]]) -> _T | None:
    """``work()``'s result, or ``None`` once SIGTERM or SIGINT cancelled it.

    Its exceptions are re-raised as they are, not wrapped in an exception group, so the
    caller can tell a retirement from a failure.
    """
    results: list[_T] = []
    errors: list[Exception] = []
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def main() -> None:
                try:
                    results.append(await work())
                except Exception as exc:  # re-raised below, outside the exception group
                    errors.append(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(main)
            async for _ in signals:
                nursery.cancel_scope.cancel()
    if errors:
        raise errors[0]
    return results[0] if results else None


def _print_jobs(outcomes: list[JobOutcome], out: Say) -> int:
    if not outcomes:
        out("no work for this agent")
    for outcome in outcomes:
        verdict = "OK" if outcome.ok else "FAILED"
        out(f"{verdict} {outcome.type} job {outcome.job_id}: {outcome.message}")
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_FAILED


def _print_checks(checks: list[TargetCheck], out: Say) -> int:
    if not checks:
        out("no enabled targets are assigned to this agent")
    for check in checks:
        verdict = "OK" if check.ok else "FAILED"
        target = check.target
        out(f"{verdict} {target.name} ({target.type}, {target.id}): {check.message}")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED
