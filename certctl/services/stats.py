"""The inventory summary behind ``/api/v1/stats/summary`` and the ``/metrics`` gauges.

Counted by the database in one query per table rather than by listing rows: the earlier
implementation listed certificates with a page size the repository silently capped, so
its counts covered only the first 50.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from certctl.core.model import (
    ACTIVE_JOB_STATUSES,
    AgentStatus,
    CertificateStatus,
    JobStatus,
    JobType,
)
from certctl.services import metrics
from certctl.services.context import Services
from certctl.store.errors import StoreUnavailable

EXPIRING_HORIZON: Final = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Summary:
    total_certificates: int
    certificates_by_status: dict[str, int]
    expiring_within_30_days: int
    total_agents: int
    online_agents: int
    offline_agents: int
    retired_agents: int
    active_jobs: int
    failed_jobs: int
    completed_jobs: int
    jobs_by_type_and_status: dict[str, dict[str, int]]


async def summary(services: Services) -> Summary:
    counts = await services.store.inventory_counts(
        expiring_before=services.now() + EXPIRING_HORIZON
    )
    for status in CertificateStatus:
        metrics.CERTIFICATES.labels(status.value).set(counts.certificates.get(status, 0))
    for agent_status in AgentStatus:
        metrics.AGENTS.labels(agent_status.value).set(counts.agents.get(agent_status, 0))
    by_type: dict[str, dict[str, int]] = {}
    for job_type in JobType:
        for job_status in JobStatus:
            n = counts.jobs.get((job_type, job_status), 0)
            metrics.JOBS.labels(job_type.value, job_status.value).set(n)
            if n:
                by_type.setdefault(job_type.value, {})[job_status.value] = n

    def jobs_in(statuses: frozenset[JobStatus]) -> int:
        return sum(n for (_, status), n in counts.jobs.items() if status in statuses)

    online = counts.agents.get(AgentStatus.ONLINE, 0)
    offline = counts.agents.get(AgentStatus.OFFLINE, 0)
    return Summary(
        total_certificates=sum(counts.certificates.values()),
        certificates_by_status={s.value: n for s, n in counts.certificates.items() if n},
        expiring_within_30_days=counts.expiring,
        total_agents=online + offline,
        online_agents=online,
        offline_agents=offline,
        retired_agents=counts.retired_agents,
        active_jobs=jobs_in(ACTIVE_JOB_STATUSES),
        failed_jobs=jobs_in(frozenset({JobStatus.FAILED})),
        completed_jobs=jobs_in(frozenset({JobStatus.COMPLETED})),
        jobs_by_type_and_status=by_type,
    )


async def database_problem(services: Services) -> str | None:
    """Why the database cannot serve requests (one sentence), or ``None`` when it can."""
    try:
        await services.store.ready()
    except StoreUnavailable as exc:
        return str(exc)
    return None
