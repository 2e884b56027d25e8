"""Renewal due dates, certificate status and expiry alerts at their exact boundaries."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from certctl.core.model import (
    AlertSeverity,
    CertificateStatus,
    CertificateVersion,
    KeyAlgorithm,
    ManagedCertificate,
    NotificationChannel,
    RenewalPolicy,
)
from certctl.core.renewal import (
    ExpiryAlert,
    alert_dedup_key,
    due_alerts,
    expiry_status,
    renewal_decision,
    renewal_due_at,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = RenewalPolicy(id="rp-default", name="default")
S = CertificateStatus


@pytest.mark.parametrize(
    ("lifetime", "window_days", "remaining"),
    [
        (90 * DAY, 30, 30 * DAY),  # the common case: the policy window
        (365 * DAY, 30, 30 * DAY),
        (60 * DAY, 30, 30 * DAY),  # window exactly half the lifetime still applies
        (60 * DAY - timedelta(microseconds=1), 30, (60 * DAY - timedelta(microseconds=1)) / 3),
        (31 * DAY, 30, 31 * DAY / 3),  # would otherwise renew after one day, every time
        (6 * DAY, 30, 2 * DAY),  # ACME short-lived profile
        (DAY, 1, 8 * timedelta(hours=1)),
        (timedelta(microseconds=1), 1, timedelta(microseconds=1)),  # never at not_after
    ],
)
def test_renewal_due_at(lifetime: timedelta, window_days: int, remaining: timedelta) -> None:
    policy = RenewalPolicy(id="rp", name="p", renewal_window_days=window_days)
    assert renewal_due_at(T0, T0 + lifetime, policy) == T0 + lifetime - remaining


def test_renewal_due_at_short_lived_fraction_is_a_parameter() -> None:
    due = renewal_due_at(T0, T0 + 10 * DAY, POLICY, short_lived_fraction=0.5)
    assert due == T0 + 5 * DAY


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_renewal_due_at_rejects_a_fraction_outside_the_unit_interval(fraction: float) -> None:
    with pytest.raises(ValueError, match="short_lived_fraction is"):
        renewal_due_at(T0, T0 + DAY, POLICY, short_lived_fraction=fraction)


@pytest.mark.parametrize("lifetime", [timedelta(0), -DAY])
def test_renewal_due_at_rejects_an_empty_validity(lifetime: timedelta) -> None:
    with pytest.raises(ValueError, match="must be later than not_before"):
        renewal_due_at(T0, T0 + lifetime, POLICY)


def test_renewal_due_at_rejects_naive_datetimes() -> None:
    naive = datetime(2030, 1, 1)
    with pytest.raises(ValueError, match="not_after must be timezone-aware"):
        renewal_due_at(naive, naive + DAY, POLICY)


def test_expiry_status_boundaries() -> None:
    due, not_after = T0 + 60 * DAY, T0 + 90 * DAY
    tick = timedelta(microseconds=1)
    assert expiry_status(due - tick, not_after, due) is S.ACTIVE
    assert expiry_status(due, not_after, due) is S.EXPIRING
    assert expiry_status(not_after - tick, not_after, due) is S.EXPIRING
    assert expiry_status(not_after, not_after, due) is S.EXPIRED


def alerts_at(
    remaining: timedelta, policy: RenewalPolicy = POLICY, sent: frozenset[str] = frozenset()
) -> tuple[ExpiryAlert, ...]:
    return due_alerts("cert-1", T0, policy, T0 - remaining, sent)


def test_no_alert_before_the_widest_threshold() -> None:
    assert alerts_at(30 * DAY + timedelta(microseconds=1)) == ()


@pytest.mark.parametrize(
    ("remaining", "threshold", "severity"),
    [
        (30 * DAY, 30, AlertSeverity.INFORMATIONAL),
        (15 * DAY, 30, AlertSeverity.INFORMATIONAL),
        (14 * DAY, 14, AlertSeverity.WARNING),
        (5 * DAY, 7, AlertSeverity.WARNING),  # only the tightest threshold, no burst
        (timedelta(0), 0, AlertSeverity.CRITICAL),
        (-3 * DAY, 0, AlertSeverity.CRITICAL),
    ],
)
def test_the_tightest_crossed_threshold_alerts(
    remaining: timedelta, threshold: int, severity: AlertSeverity
) -> None:
    key = f"expiry:cert-1:2030-01-01T00:00:00+00:00:{threshold}d:Email"
    assert alerts_at(remaining) == (
        ExpiryAlert("cert-1", T0, threshold, severity, NotificationChannel.EMAIL, remaining, key),
    )


def test_sent_alerts_are_not_repeated() -> None:
    (alert,) = alerts_at(10 * DAY)
    assert alerts_at(9 * DAY, sent=frozenset({alert.dedup_key})) == ()
    assert alerts_at(6 * DAY, sent=frozenset({alert.dedup_key}))[0].threshold_days == 7


def test_each_channel_of_the_tier_gets_its_own_alert_and_key() -> None:
    policy = RenewalPolicy(
        id="rp",
        name="p",
        alert_channels={
            AlertSeverity.WARNING: (NotificationChannel.EMAIL, NotificationChannel.SLACK)
        },
    )
    email, slack = alerts_at(10 * DAY, policy)
    assert (email.channel, slack.channel) == (NotificationChannel.EMAIL, NotificationChannel.SLACK)
    assert email.dedup_key != slack.dedup_key
    only_slack = alerts_at(10 * DAY, policy, sent=frozenset({email.dedup_key}))
    assert only_slack == (slack,)
    assert alerts_at(40 * DAY, dataclasses.replace(policy, alert_thresholds_days=(60,))) == ()


def test_unmapped_thresholds_are_informational() -> None:
    policy = RenewalPolicy(id="rp", name="p", alert_thresholds_days=(21,))
    (alert,) = alerts_at(20 * DAY, policy)
    assert (alert.threshold_days, alert.severity) == (21, AlertSeverity.INFORMATIONAL)


def test_a_renewed_version_is_alerted_again() -> None:
    old = alert_dedup_key("cert-1", T0, 7, NotificationChannel.EMAIL)
    new = alert_dedup_key("cert-1", T0 + 90 * DAY, 7, NotificationChannel.EMAIL)
    assert old != new
    assert due_alerts("cert-1", T0 + 90 * DAY, POLICY, T0 + 85 * DAY, {old})[0].dedup_key == new


def test_due_alerts_rejects_a_naive_now() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        due_alerts("cert-1", T0, POLICY, datetime(2030, 1, 1), ())


def make_cert(status: CertificateStatus) -> ManagedCertificate:
    return ManagedCertificate(
        id="cert-1",
        name="web",
        common_name="example.test",
        owner_id="owner-1",
        issuer_id="iss-local",
        renewal_policy_id="rp-default",
        created_at=T0,
        updated_at=T0,
        status=status,
        expires_at=T0 + 90 * DAY,
    )


VERSION = CertificateVersion(
    id="certver-1",
    certificate_id="cert-1",
    serial_number="01",
    not_before=T0,
    not_after=T0 + 90 * DAY,
    fingerprint_sha256="00" * 32,
    pem_chain="",
    key_algorithm=KeyAlgorithm.ECDSA,
    key_size=256,
    created_at=T0,
)
DUE = T0 + 60 * DAY


def test_an_unissued_certificate_is_left_to_its_issuance_job() -> None:
    decision = renewal_decision(make_cert(S.PENDING), None, POLICY, T0 + 400 * DAY)
    assert (decision.renew, decision.status, decision.alerts, decision.due_at) == (
        False,
        S.PENDING,
        (),
        None,
    )


def test_the_version_must_belong_to_the_certificate() -> None:
    other = dataclasses.replace(VERSION, certificate_id="cert-2")
    with pytest.raises(
        ValueError, match=r"latest\.certificate_id is cert-2; pass a version of cert-1"
    ):
        renewal_decision(make_cert(S.ACTIVE), other, POLICY, T0)


def test_active_before_the_window() -> None:
    decision = renewal_decision(make_cert(S.ACTIVE), VERSION, POLICY, DUE - timedelta(seconds=1))
    assert (decision.renew, decision.status, decision.due_at) == (False, S.ACTIVE, DUE)
    assert decision.alerts == ()


def test_due_certificates_renew_and_alert() -> None:
    decision = renewal_decision(make_cert(S.ACTIVE), VERSION, POLICY, DUE)
    assert (decision.renew, decision.status) == (True, S.EXPIRING)
    assert [alert.threshold_days for alert in decision.alerts] == [30]


def test_expired_certificates_still_renew() -> None:
    decision = renewal_decision(make_cert(S.EXPIRING), VERSION, POLICY, T0 + 91 * DAY)
    assert (decision.renew, decision.status) == (True, S.EXPIRED)
    assert decision.alerts[0].severity is AlertSeverity.CRITICAL


def test_auto_renew_off_alerts_but_does_not_renew() -> None:
    policy = RenewalPolicy(id="rp", name="manual", auto_renew=False)
    decision = renewal_decision(make_cert(S.ACTIVE), VERSION, policy, T0 + 80 * DAY)
    assert (decision.renew, decision.status) == (False, S.EXPIRING)
    assert [alert.threshold_days for alert in decision.alerts] == [14]


@pytest.mark.parametrize("status", [S.RENEWAL_IN_PROGRESS, S.FAILED])
def test_held_certificates_keep_their_status_but_still_alert(status: CertificateStatus) -> None:
    decision = renewal_decision(make_cert(status), VERSION, POLICY, T0 + 85 * DAY)
    assert (decision.renew, decision.status, decision.due_at) == (False, status, DUE)
    assert [alert.threshold_days for alert in decision.alerts] == [7]


@pytest.mark.parametrize("status", [S.REVOKED, S.ARCHIVED])
def test_unmanaged_certificates_are_left_alone(status: CertificateStatus) -> None:
    decision = renewal_decision(make_cert(status), VERSION, POLICY, T0 + 91 * DAY)
    assert (decision.renew, decision.status, decision.alerts) == (False, status, ())


def test_already_sent_alerts_are_filtered_from_the_decision() -> None:
    first = renewal_decision(make_cert(S.ACTIVE), VERSION, POLICY, DUE)
    sent = {alert.dedup_key for alert in first.alerts}
    again = renewal_decision(make_cert(S.EXPIRING), VERSION, POLICY, DUE, sent_alert_keys=sent)
    assert (again.renew, again.alerts) == (True, ())
