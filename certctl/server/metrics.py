"""Per-process server instruments: request latency by route and status, and whether
this process leads the scheduler.

Labelled by the route pattern (``/api/v1/certificates/<cert_id>``), never the raw path:
one series per certificate id would grow without bound.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

HTTP_REGISTRY: Final = CollectorRegistry(auto_describe=True)

REQUEST_SECONDS: Final = Histogram(
    "certctl_http_request_duration_seconds",
    "HTTP request latency by method, route and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=HTTP_REGISTRY,
)
SCHEDULER_LEADER: Final = Gauge(
    "certctl_scheduler_leader",
    "1 while this process holds the scheduler lock and runs the cluster-wide loops.",
    registry=HTTP_REGISTRY,
)
BACKGROUND_FAILURES: Final = Counter(
    "certctl_background_failures",
    "Failures of a background loop's step (logged with the traceback, then retried).",
    ["loop"],
    registry=HTTP_REGISTRY,
)
AUDIT_PENDING: Final = Gauge(
    "certctl_audit_pending_events",
    "Audit events buffered in this process and not yet written.",
    registry=HTTP_REGISTRY,
)
AUTH_FAILURES: Final = Counter(
    "certctl_auth_failures",
    "Requests refused for a wrong or missing credential, and those throttled for it.",
    ["outcome"],
    registry=HTTP_REGISTRY,
)
