"""Agent liveness from heartbeats, and the reaping of jobs stranded on unreachable agents.

Agents are pull-only, so a heartbeat is the only evidence that one is alive. One threshold
(``offline_after``) drives both the Online/Offline status and the job reaper: the earlier
implementation used 2 minutes for one and 5 for the other, so an agent could show Offline
while its jobs were still considered safe.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from certctl.core.clock import require_aware
from certctl.core.jobs import AgentOffline
from certctl.core.model import Agent, AgentStatus, Job, JobStatus


def agent_liveness(
    last_heartbeat_at: datetime | None, now: datetime, offline_after: timedelta
) -> AgentStatus:
    """Online while the last heartbeat is at most ``offline_after`` old; an agent that never
    sent one is Offline."""
    require_aware(now, "now")
    if last_heartbeat_at is None or now - last_heartbeat_at > offline_after:
        return AgentStatus.OFFLINE
    return AgentStatus.ONLINE


def status_update(agent: Agent, now: datetime, offline_after: timedelta) -> AgentStatus | None:
    """The status the health loop should write for ``agent``, or ``None`` to leave it.

    A retired agent is left as it is: it gets 410 on every call and never heartbeats again,
    so flipping it to Offline would only add noise to its history, and it must never be
    flipped back to Online.
    """
    if agent.retired_at is not None:
        return None
    status = agent_liveness(agent.last_heartbeat_at, now, offline_after)
    return None if status is agent.status else status


def reap_event(
    job: Job, agent: Agent, now: datetime, offline_after: timedelta
) -> AgentOffline | None:
    """``AgentOffline`` for a Running job whose agent is retired or silent too long, so the
    job fails (and retries) instead of staying Running forever; ``None`` otherwise."""
    if job.agent_id != agent.id:
        raise ValueError(f"agent.id is {agent.id}; pass the job's agent {job.agent_id}.")
    if job.status is not JobStatus.RUNNING:
        return None
    if agent.retired_at is None and (
        agent_liveness(agent.last_heartbeat_at, now, offline_after) is AgentStatus.ONLINE
    ):
        return None
    return AgentOffline(agent.id, agent.last_heartbeat_at, agent.retired_at)
