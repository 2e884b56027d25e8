"""When a certificate is due for renewal, what its status is, and which expiry alerts to send.

The earlier implementation renewed everything within a fixed 31 days of expiry and ignored
the policy. Here the policy's ``renewal_window_days`` decides, ``auto_renew=False`` alerts
without renewing, and certificates too short-lived for a day-granular window renew when a
fixed fraction of their lifetime remains.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from certctl.core.clock import require_aware
from certctl.core.model import (
    CLOSED_CERTIFICATE_STATUSES,
    AlertSeverity,
    CertificateStatus,
    CertificateVersion,
    ManagedCertificate,
    NotificationChannel,
    RenewalPolicy,
)

SHORT_LIVED_FRACTION: Final = 1 / 3
"""Share of the lifetime left when a short-lived certificate renews (the ACME convention of
renewing at two thirds of the lifetime)."""

_HELD: Final = frozenset({CertificateStatus.RENEWAL_IN_PROGRESS, CertificateStatus.FAILED})


def renewal_due_at(
    not_before: datetime,
    not_after: datetime,
    policy: RenewalPolicy,
    *,
    short_lived_fraction: float = SHORT_LIVED_FRACTION,
) -> datetime:
    """The instant renewal becomes due: always in ``[not_before, not_after)``.

    The policy's window applies while it is at most half the lifetime. A longer window
    (a 30-day window on a 31-day certificate) would renew almost at once and then again with
    every new version, so such certificates renew when ``short_lived_fraction`` of their
    lifetime remains instead. The remaining time is at least one microsecond so that even a
    degenerate lifetime renews strictly before it ends.
    """
    require_aware(not_after, "not_after")
    if not 0 < short_lived_fraction < 1:
        raise ValueError(
            f"short_lived_fraction is {short_lived_fraction}; pass a number above 0 and below 1."
        )
    lifetime = not_after - not_before
    if lifetime <= timedelta(0):
        raise ValueError(
            f"not_after ({not_after.isoformat()}) must be later than not_before "
            f"({not_before.isoformat()}); pass the validity period of an issued certificate."
        )
    window = timedelta(days=policy.renewal_window_days)
    if window * 2 > lifetime:
        window = max(lifetime * short_lived_fraction, timedelta.resolution)
    return not_after - window


def expiry_status(now: datetime, not_after: datetime, due_at: datetime) -> CertificateStatus:
    """Expired once no validity remains, Expiring once renewal is due, else Active."""
    require_aware(now, "now")
    if now >= not_after:
        return CertificateStatus.EXPIRED
    if now >= due_at:
        return CertificateStatus.EXPIRING
    return CertificateStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class ExpiryAlert:
    """One notification to send; ``remaining`` is negative once the certificate expired."""

    certificate_id: str
    not_after: datetime
    threshold_days: int
    severity: AlertSeverity
    channel: NotificationChannel
    remaining: timedelta
    dedup_key: str


def alert_dedup_key(
    certificate_id: str, not_after: datetime, threshold_days: int, channel: NotificationChannel
) -> str:
    """Identifies an alert so it is sent once per certificate, threshold and channel.

    The expiry is part of the key: after a renewal the new version counts down through the
    same thresholds and must be alerted again, which a key of certificate id alone would
    suppress forever.
    """
    return f"expiry:{certificate_id}:{not_after.isoformat()}:{threshold_days}d:{channel}"


def due_alerts(
    certificate_id: str,
    not_after: datetime,
    policy: RenewalPolicy,
    now: datetime,
    sent: Collection[str],
) -> tuple[ExpiryAlert, ...]:
    """The expiry alerts to send at ``now`` that are not already in ``sent`` (dedup keys).

    Only the tightest threshold crossed is alerted. A certificate first seen with 5 days
    left gets the 7-day alert, not a burst of 30-, 14- and 7-day alerts, and a threshold
    missed while the scheduler was down is not sent late once a tighter one applies.
    """
    require_aware(now, "now")
    remaining = not_after - now
    crossed = [t for t in policy.alert_thresholds_days if remaining <= timedelta(days=t)]
    if not crossed:
        return ()
    threshold = min(crossed)
    severity = policy.alert_severity_map.get(threshold, AlertSeverity.INFORMATIONAL)
    alerts = (
        ExpiryAlert(
            certificate_id,
            not_after,
            threshold,
            severity,
            channel,
            remaining,
            alert_dedup_key(certificate_id, not_after, threshold, channel),
        )
        for channel in policy.alert_channels.get(severity, ())
    )
    return tuple(alert for alert in alerts if alert.dedup_key not in sent)


@dataclass(frozen=True, slots=True)
class RenewalDecision:
    """What the renewal scan does with one certificate.

    ``renew`` asks for a Renewal job (and the RenewalInProgress status that goes with it);
    ``status`` is the status the certificate should have now; ``due_at`` is ``None`` only
    when there is no issued version to renew.
    """

    renew: bool
    status: CertificateStatus
    alerts: tuple[ExpiryAlert, ...]
    due_at: datetime | None


def renewal_decision(
    cert: ManagedCertificate,
    latest: CertificateVersion | None,
    policy: RenewalPolicy,
    now: datetime,
    *,
    sent_alert_keys: Collection[str] = frozenset(),
) -> RenewalDecision:
    """Decide renewal, status and alerts for ``cert`` whose newest version is ``latest``.

    * No version yet: nothing to renew or alert; the Issuance job created with the
      certificate is in charge.
    * Revoked or Archived: no longer managed, left alone.
    * RenewalInProgress or Failed: the status belongs to the job (or to the operator who
      must look at the failure), but expiry alerts still go out, since a stuck renewal is
      exactly when someone needs to hear about the expiry.
    * Otherwise the status follows the clock, and a due renewal is requested only when the
      policy allows automatic renewal; with ``auto_renew=False`` the alerts are the action.
    """
    if latest is None:
        return RenewalDecision(renew=False, status=cert.status, alerts=(), due_at=None)
    if latest.certificate_id != cert.id:
        raise ValueError(
            f"latest.certificate_id is {latest.certificate_id}; pass a version of {cert.id}."
        )
    due_at = renewal_due_at(latest.not_before, latest.not_after, policy)
    if cert.status in CLOSED_CERTIFICATE_STATUSES:
        return RenewalDecision(renew=False, status=cert.status, alerts=(), due_at=due_at)
    alerts = due_alerts(cert.id, latest.not_after, policy, now, sent_alert_keys)
    if cert.status in _HELD:
        return RenewalDecision(renew=False, status=cert.status, alerts=alerts, due_at=due_at)
    status = expiry_status(now, latest.not_after, due_at)
    renew = policy.auto_renew and status is not CertificateStatus.ACTIVE
    return RenewalDecision(renew=renew, status=status, alerts=alerts, due_at=due_at)
