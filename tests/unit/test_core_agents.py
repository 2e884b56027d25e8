"""Agent liveness, the health loop's status writes, and reaping jobs of silent agents."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from certctl.core.agents import agent_liveness, reap_event, status_update
from certctl.core.jobs import AgentOffline, Claimed, create_job, transition
from certctl.core.model import Agent, AgentStatus, Job, JobStatus, JobType, RenewalPolicy

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LIMIT = timedelta(minutes=5)
TICK = timedelta(microseconds=1)


def test_liveness_boundaries() -> None:
    assert agent_liveness(T0, T0 + LIMIT, LIMIT) is AgentStatus.ONLINE
    assert agent_liveness(T0, T0 + LIMIT + TICK, LIMIT) is AgentStatus.OFFLINE
    assert agent_liveness(None, T0, LIMIT) is AgentStatus.OFFLINE
    assert agent_liveness(T0 + LIMIT, T0, LIMIT) is AgentStatus.ONLINE  # clock skew


def test_liveness_refuses_a_naive_now() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        agent_liveness(None, datetime(2030, 1, 1), LIMIT)


AGENT = Agent(id="agent-a", name="a", hostname="h", registered_at=T0, last_heartbeat_at=T0)


def test_status_update_writes_only_changes() -> None:
    assert status_update(AGENT, T0 + LIMIT, LIMIT) is None
    assert status_update(AGENT, T0 + LIMIT + TICK, LIMIT) is AgentStatus.OFFLINE
    offline = dataclasses.replace(AGENT, status=AgentStatus.OFFLINE)
    assert status_update(offline, T0 + LIMIT + TICK, LIMIT) is None
    assert status_update(offline, T0, LIMIT) is AgentStatus.ONLINE


def test_retired_agents_are_never_flipped() -> None:
    retired = dataclasses.replace(AGENT, status=AgentStatus.OFFLINE, retired_at=T0)
    assert status_update(retired, T0, LIMIT) is None
    assert status_update(retired, T0 + 10 * LIMIT, LIMIT) is None


def running_deployment(agent_id: str = "agent-a") -> Job:
    job = create_job(
        job_id="job-1",
        job_type=JobType.DEPLOYMENT,
        certificate_id="cert-1",
        policy=RenewalPolicy(id="rp", name="p"),
        now=T0,
        target_id="target-1",
    )
    return transition(job, Claimed(agent_id), T0)[0]


def test_a_live_agents_job_is_not_reaped() -> None:
    assert reap_event(running_deployment(), AGENT, T0 + LIMIT, LIMIT) is None


def test_a_silent_agents_running_job_is_reaped_and_fails() -> None:
    job = running_deployment()
    event = reap_event(job, AGENT, T0 + LIMIT + TICK, LIMIT)
    assert event == AgentOffline("agent-a", T0, None)
    failed, _ = transition(job, event, T0 + LIMIT + TICK)
    assert failed.status is JobStatus.FAILED
    assert (
        failed.last_error == "agent agent-a is offline: last heartbeat at 2030-01-01T00:00:00+00:00"
    )


def test_a_retired_agents_job_is_reaped_even_with_a_fresh_heartbeat() -> None:
    retired = dataclasses.replace(AGENT, retired_at=T0)
    assert reap_event(running_deployment(), retired, T0, LIMIT) == AgentOffline("agent-a", T0, T0)


def test_only_running_jobs_are_reaped() -> None:
    pending = dataclasses.replace(running_deployment(), status=JobStatus.PENDING)
    assert reap_event(pending, AGENT, T0 + 10 * LIMIT, LIMIT) is None


def test_reap_needs_the_jobs_own_agent() -> None:
    with pytest.raises(ValueError, match=r"agent\.id is agent-a; pass the job's agent agent-b"):
        reap_event(running_deployment("agent-b"), AGENT, T0, LIMIT)
