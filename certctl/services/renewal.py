"""The renewal scan: statuses follow the clock, due certificates get a Renewal job, and
expiry alerts are raised once per certificate, threshold and channel.

Alerts are recorded as ``expiration_alert_sent`` audit events (with their dedup key) and
counted in ``certctl_expiry_alerts``; delivery to e-mail or webhooks is not built yet, so
the audit trail and the metric are where an operator sees them today.
"""

from __future__ import annotations

from certctl.core.model import JobType, RenewalPolicy
from certctl.core.renewal import renewal_decision
from certctl.services import audit, jobs, metrics
from certctl.services.context import SYSTEM, Services
from certctl.store.base import AuditQuery, DueRenewal
from certctl.store.errors import Conflict, NotFound

ALERT_ACTION = "expiration_alert_sent"


async def scan(services: Services) -> int:
    """One pass over every due certificate; returns how many Renewal jobs it created."""
    policies: dict[str, RenewalPolicy] = {}
    created = 0
    cursor: str | None = None
    while True:
        page = await services.store.due_renewals(services.now(), cursor=cursor)
        for due in page.items:
            policy_id = due.certificate.renewal_policy_id
            if policy_id not in policies:
                policies[policy_id] = await services.store.get_policy(policy_id)
            try:
                created += await _one(services, due, policies[policy_id])
            except (Conflict, NotFound):
                continue
        if page.next_cursor is None:
            return created
        cursor = page.next_cursor


async def _one(services: Services, due: DueRenewal, policy: RenewalPolicy) -> int:
    cert = due.certificate
    sent = await services.store.list_audit(
        AuditQuery(action=ALERT_ACTION, resource_type="certificate", resource_id=cert.id),
        limit=1000,
    )
    keys = {str(e.details.get("dedup_key")) for e in sent.items}
    decision = renewal_decision(cert, due.latest, policy, services.now(), sent_alert_keys=keys)
    alerts = [
        audit.event(
            services,
            SYSTEM,
            ALERT_ACTION,
            "certificate",
            cert.id,
            details={
                "dedup_key": alert.dedup_key,
                "threshold_days": alert.threshold_days,
                "severity": alert.severity.value,
                "channel": alert.channel.value,
                "days_remaining": alert.remaining.days,
            },
        )
        for alert in decision.alerts
    ]
    if alerts:
        await services.store.append_audit(alerts)
        for alert in decision.alerts:
            metrics.EXPIRY_ALERTS.labels(
                str(alert.threshold_days), alert.channel.value, alert.severity.value
            ).inc()
    if decision.renew and cert.target_ids:
        job = await jobs.start_key_job(
            services, SYSTEM, cert, JobType.RENEWAL, due_at=due.due_at.isoformat()
        )
        return 0 if job is None else 1
    if decision.status is not cert.status:
        await services.store.set_certificate_status(
            cert.id,
            decision.status,
            expected=cert.status,
            at=services.now(),
            audit=[
                audit.event(
                    services,
                    SYSTEM,
                    "certificate_status_changed",
                    "certificate",
                    cert.id,
                    details={"from": cert.status.value, "to": decision.status.value},
                )
            ],
        )
    return 0
