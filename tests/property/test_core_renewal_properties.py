"""Renewal timing and expiry alerts hold for every valid policy and lifetime."""

from __future__ import annotations

import operator
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from hypothesis import given
from hypothesis import strategies as st

from certctl.core.model import (
    ALERT_THRESHOLD_DAYS_RANGE,
    RENEWAL_WINDOW_DAYS_RANGE,
    AlertSeverity,
    CertificateStatus,
    NotificationChannel,
    RenewalPolicy,
)
from certctl.core.renewal import ExpiryAlert, due_alerts, expiry_status, renewal_due_at

TICK = timedelta(microseconds=1)
starts = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
lifetimes = st.one_of(
    st.timedeltas(min_value=TICK, max_value=timedelta(days=2)),
    st.timedeltas(min_value=TICK, max_value=timedelta(days=20 * 365)),
)
window_days = st.integers(*RENEWAL_WINDOW_DAYS_RANGE)
fractions = st.floats(0, 1, exclude_min=True, exclude_max=True)


@given(not_before=starts, lifetime=lifetimes, days=window_days, fraction=fractions)
def test_renewal_is_due_within_the_validity_and_strictly_before_expiry(
    not_before: datetime, lifetime: timedelta, days: int, fraction: float
) -> None:
    policy = RenewalPolicy(id="rp", name="p", renewal_window_days=days)
    not_after = not_before + lifetime
    due = renewal_due_at(not_before, not_after, policy, short_lived_fraction=fraction)
    assert not_before <= due < not_after


@given(not_before=starts, lifetime=lifetimes, days=window_days)
def test_the_policy_window_is_honoured_whenever_it_fits_twice(
    not_before: datetime, lifetime: timedelta, days: int
) -> None:
    policy = RenewalPolicy(id="rp", name="p", renewal_window_days=days)
    window = timedelta(days=days)
    remaining = not_before + lifetime - renewal_due_at(not_before, not_before + lifetime, policy)
    if lifetime >= 2 * window:
        assert remaining == window
    else:
        assert abs(remaining - max(lifetime / 3, TICK)) <= TICK
        assert remaining < window


@given(
    due_offset=st.timedeltas(min_value=TICK, max_value=timedelta(days=365)),
    instants=st.lists(
        st.timedeltas(min_value=timedelta(days=-400), max_value=timedelta(days=400)), min_size=2
    ),
)
def test_status_only_moves_forward_as_time_passes(
    due_offset: timedelta, instants: list[timedelta]
) -> None:
    not_after = datetime(2030, 1, 1, tzinfo=UTC)
    due = not_after - due_offset
    order = [CertificateStatus.ACTIVE, CertificateStatus.EXPIRING, CertificateStatus.EXPIRED]
    ranks = [order.index(expiry_status(not_after + at, not_after, due)) for at in sorted(instants)]
    assert ranks == sorted(ranks)


policies = st.builds(
    RenewalPolicy,
    id=st.just("rp"),
    name=st.just("p"),
    alert_thresholds_days=st.lists(st.integers(*ALERT_THRESHOLD_DAYS_RANGE), max_size=6).map(tuple),
    alert_channels=st.dictionaries(
        st.sampled_from(AlertSeverity),
        st.lists(st.sampled_from(NotificationChannel), unique=True, max_size=3).map(tuple),
    ),
)


@given(
    policy=policies,
    remaining=st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=400)),
    sent_mask=st.lists(st.booleans(), max_size=6),
)
def test_alerts_are_the_tightest_threshold_once_per_channel(
    policy: RenewalPolicy, remaining: timedelta, sent_mask: list[bool]
) -> None:
    not_after = datetime(2030, 1, 1, tzinfo=UTC)
    now = not_after - remaining
    everything = due_alerts("cert-1", not_after, policy, now, ())
    sent = {alert.dedup_key for alert, drop in zip(everything, sent_mask, strict=False) if drop}
    alerts = due_alerts("cert-1", not_after, policy, now, sent)

    crossed = [t for t in policy.alert_thresholds_days if remaining <= timedelta(days=t)]
    if not crossed:
        assert everything == ()
        return
    tightest = min(crossed)
    severity = policy.alert_severity_map.get(tightest, AlertSeverity.INFORMATIONAL)
    assert [a.channel for a in everything] == list(policy.alert_channels.get(severity, ()))
    assert all(
        (a.threshold_days, a.severity, a.remaining) == (tightest, severity, remaining)
        for a in everything
    )
    assert len({a.dedup_key for a in everything}) == len(everything)
    assert [a for a in everything if a.dedup_key not in sent] == list(alerts)
    assert due_alerts("cert-1", not_after, policy, now, sent | {a.dedup_key for a in alerts}) == ()


@given(
    policy=policies,
    steps=st.lists(
        st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=20)), max_size=40
    ),
)
def test_a_countdown_alerts_each_key_once_and_never_misses_expiry(
    policy: RenewalPolicy, steps: list[timedelta]
) -> None:
    not_after = datetime(2030, 1, 1, tzinfo=UTC)
    scans = accumulate(steps, operator.add, initial=not_after - timedelta(days=400))
    sent: list[ExpiryAlert] = []
    for now in [*scans, not_after]:
        sent.extend(due_alerts("cert-1", not_after, policy, now, {a.dedup_key for a in sent}))

    assert len({a.dedup_key for a in sent}) == len(sent)
    thresholds = [a.threshold_days for a in sent]
    assert thresholds == sorted(thresholds, reverse=True)
    if policy.alert_thresholds_days:
        last = min(policy.alert_thresholds_days)
        severity = policy.alert_severity_map.get(last, AlertSeverity.INFORMATIONAL)
        expected = set(policy.alert_channels.get(severity, ()))
        assert {a.channel for a in sent if a.threshold_days == last} == expected
