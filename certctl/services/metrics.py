"""Prometheus instruments the services update; ``/metrics`` renders ``REGISTRY``.

A private registry rather than the process-global default: tests and the simulator build
many ``Services`` in one process and read these counters, and the default registry would
also export the interpreter's own collectors, which are not ours to promise.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY: Final = CollectorRegistry(auto_describe=True)

JOB_TRANSITIONS: Final = Counter(
    "certctl_job_transitions",
    "Job state changes, by job type and the state entered.",
    ["type", "status"],
    registry=REGISTRY,
)
JOBS_FAILED_PERMANENTLY: Final = Counter(
    "certctl_job_failed_permanently",
    "Jobs that exhausted their attempts (an alert was raised).",
    ["type"],
    registry=REGISTRY,
)
ISSUANCE_SECONDS: Final = Histogram(
    "certctl_issuance_duration_seconds",
    "Time to check a CSR and sign a certificate.",
    ["issuer_type", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
EXPIRY_ALERTS: Final = Counter(
    "certctl_expiry_alerts",
    "Expiry alerts raised, by threshold and channel.",
    ["threshold_days", "channel", "severity"],
    registry=REGISTRY,
)
CERTIFICATES: Final = Gauge(
    "certctl_certificates", "Managed certificates by status.", ["status"], registry=REGISTRY
)
AGENTS: Final = Gauge("certctl_agents", "Agents by status.", ["status"], registry=REGISTRY)
JOBS: Final = Gauge(
    "certctl_jobs", "Jobs by type and status.", ["type", "status"], registry=REGISTRY
)
AGENT_POLLS: Final = Counter(
    "certctl_agent_polls",
    "Agent work polls, by mode (long: the server held it; short) and whether they carried "
    "work. Polls without work are liveness, counted here instead of in the audit trail.",
    ["mode", "result"],
    registry=REGISTRY,
)
AGENT_HEARTBEATS: Final = Counter(
    "certctl_agent_heartbeats",
    "Standalone heartbeats (agents that do not long-poll); liveness, not audited.",
    registry=REGISTRY,
)
WAITING_POLLS: Final = Gauge(
    "certctl_agent_waiting_polls",
    "Long polls this process holds now (bounded by CERTCTL_MAX_WAITING_AGENTS).",
    registry=REGISTRY,
)
WORK_ANNOUNCEMENTS: Final = Counter(
    "certctl_work_announcements",
    "Agent ids announced to other replicas (sent), heard from them (received), and "
    "messages on the channel that were not ours (malformed).",
    ["direction"],
    registry=REGISTRY,
)
SIGHTINGS_WRITTEN: Final = Counter(
    "certctl_agent_sightings_written",
    "Agent liveness records written by the coalesced flush.",
    registry=REGISTRY,
)
