"""Deploy metrics, incremented where the events happen.

A registry of our own (not the process default) so the server can expose exactly these
and tests can read them without picking up unrelated collectors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

ATTEMPTS = Counter(
    "certctl_deploy_attempts",
    "Deploy attempts by target type and result (success or failure).",
    ["target_type", "result"],
    registry=REGISTRY,
)
VALIDATE_FAILURES = Counter(
    "certctl_deploy_validate_failures",
    "Deploys stopped by the staged-material check or the validate command.",
    ["target_type"],
    registry=REGISTRY,
)
RELOAD_FAILURES = Counter(
    "certctl_deploy_reload_failures",
    "Deploys whose reload command failed.",
    ["target_type"],
    registry=REGISTRY,
)
POST_VERIFY_FAILURES = Counter(
    "certctl_deploy_post_verify_failures",
    "Deploys whose endpoint did not serve the deployed certificate.",
    ["target_type"],
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "certctl_deploy_rollback",
    "Restores of the previous files, by outcome (restored or also_failed).",
    ["target_type", "outcome"],
    registry=REGISTRY,
)
IDEMPOTENT_SKIPS = Counter(
    "certctl_deploy_idempotent_skip",
    "Deploys skipped because every destination already held the planned bytes.",
    ["target_type"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "certctl_deploy_duration_seconds",
    "Wall time of a deploy from plan check to the last cleanup step.",
    ["target_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
