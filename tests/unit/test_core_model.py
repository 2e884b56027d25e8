"""Enum spellings are an interface (database, API, agents all share them), and the policy
and job bounds are what the renewal and retry arithmetic rely on."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from certctl.core.model import (
    ActorType,
    Agent,
    AgentStatus,
    AlertSeverity,
    CertificateProfile,
    CertificateStatus,
    ExtendedKeyUsage,
    IssuerType,
    Job,
    JobStatus,
    JobType,
    KeyAlgorithm,
    ManagedCertificate,
    NotificationChannel,
    RenewalPolicy,
    RevocationReason,
    TargetType,
    VerificationStatus,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("enum", "values"),
    [
        (
            CertificateStatus,
            "Pending Active Expiring Expired RenewalInProgress Failed Revoked Archived",
        ),
        (JobType, "Issuance Renewal Deployment"),
        (
            JobStatus,
            "Pending AwaitingCSR AwaitingApproval Running Completed Failed Cancelled",
        ),
        (AgentStatus, "Online Offline"),
        (KeyAlgorithm, "ECDSA RSA Ed25519"),
        (AlertSeverity, "Informational Warning Critical"),
        (NotificationChannel, "Email Webhook Slack Teams PagerDuty OpsGenie"),
        (
            TargetType,
            "NGINX Apache HAProxy Traefik Caddy Envoy Postfix Dovecot File",
        ),
        (IssuerType, "LocalCA"),
        (ActorType, "User System Agent"),
        (
            ExtendedKeyUsage,
            "ServerAuth ClientAuth CodeSigning EmailProtection TimeStamping",
        ),
        (VerificationStatus, "Pending Success Failed Skipped"),
    ],
)
def test_enum_strings_are_the_one_pascal_case_spelling(
    enum: type[CertificateStatus], values: str
) -> None:
    assert [member.value for member in enum] == values.split()
    assert all(member == member.value for member in enum)


def test_revocation_reasons_carry_their_rfc5280_crl_codes() -> None:
    assert {reason.value: reason.code for reason in RevocationReason} == {
        "Unspecified": 0,
        "KeyCompromise": 1,
        "CACompromise": 2,
        "AffiliationChanged": 3,
        "Superseded": 4,
        "CessationOfOperation": 5,
        "CertificateHold": 6,
        "PrivilegeWithdrawn": 9,
    }


def test_renewal_policy_defaults_match_the_reference_seed() -> None:
    policy = RenewalPolicy(id="rp-default", name="default")
    assert policy.renewal_window_days == 30
    assert policy.auto_renew is True
    assert policy.max_retries == 3
    assert policy.max_attempts == 4
    assert policy.retry_interval_seconds == 3600
    assert policy.alert_thresholds_days == (30, 14, 7, 0)
    assert dict(policy.alert_severity_map) == {
        30: AlertSeverity.INFORMATIONAL,
        14: AlertSeverity.WARNING,
        7: AlertSeverity.WARNING,
        0: AlertSeverity.CRITICAL,
    }
    assert dict(policy.alert_channels) == dict.fromkeys(AlertSeverity, (NotificationChannel.EMAIL,))


def test_default_mappings_cannot_be_mutated_through_an_instance() -> None:
    policy = RenewalPolicy(id="rp", name="p")
    with pytest.raises(TypeError):
        policy.alert_severity_map[1] = AlertSeverity.CRITICAL  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.auto_renew = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "renewal_window_days",
            0,
            "renewal_window_days is 0; set it to a whole number from 1 to 365",
        ),
        ("renewal_window_days", 366, "renewal_window_days is 366"),
        ("max_retries", -1, "max_retries is -1; set it to a whole number from 0 to 10"),
        ("max_retries", 11, "max_retries is 11"),
        ("retry_interval_seconds", 59, "retry_interval_seconds is 59; .* from 60 to 86400"),
        ("retry_interval_seconds", 86_401, "retry_interval_seconds is 86401"),
        ("alert_thresholds_days", (30, -1), "alert_thresholds_days entry is -1; .* 0 to 365"),
        ("alert_thresholds_days", (366,), "alert_thresholds_days entry is 366"),
    ],
)
def test_renewal_policy_rejects_out_of_range_values(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^RenewalPolicy rp-x {message}"):
        RenewalPolicy(id="rp-x", name="x", **{field: value})  # type: ignore[arg-type]


def test_renewal_policy_accepts_its_bounds() -> None:
    low = RenewalPolicy(
        id="a", name="a", renewal_window_days=1, max_retries=0, retry_interval_seconds=60
    )
    high = RenewalPolicy(
        id="b",
        name="b",
        renewal_window_days=365,
        max_retries=10,
        retry_interval_seconds=86_400,
        alert_thresholds_days=(0, 365),
    )
    assert (low.max_attempts, high.max_attempts) == (1, 11)


def make_job(**overrides: object) -> Job:
    fields: dict[str, object] = {
        "id": "job-1",
        "type": JobType.RENEWAL,
        "certificate_id": "cert-1",
        "status": JobStatus.PENDING,
        "created_at": T0,
        "scheduled_at": T0,
        "status_changed_at": T0,
    }
    return Job(**(fields | overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_attempts": 0}, "max_attempts is 0; set it to 1 or more"),
        ({"attempts": 4, "max_attempts": 3}, "attempts is 4; set it to a whole number from 0 to 3"),
        ({"attempts": -1}, "attempts is -1"),
        ({"retry_interval_seconds": 10}, "retry_interval_seconds is 10"),
    ],
)
def test_job_rejects_inconsistent_counters(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^Job job-1 {message}"):
        make_job(**overrides)


def test_job_accepts_attempts_equal_to_max() -> None:
    assert make_job(attempts=3, max_attempts=3).attempts == 3


@pytest.mark.parametrize(
    ("allow", "ttl", "short"),
    [
        (True, 600, True),
        (True, 3599, True),
        (True, 3600, False),
        (True, 0, False),
        (False, 600, False),
    ],
)
def test_profile_short_lived(allow: bool, ttl: int, short: bool) -> None:
    profile = CertificateProfile(id="p", name="p", allow_short_lived=allow, max_ttl_seconds=ttl)
    assert profile.is_short_lived is short


def test_profile_defaults_allow_p256_and_rsa2048_server_auth() -> None:
    profile = CertificateProfile(id="p", name="p")
    rules = {(rule.algorithm, rule.min_size) for rule in profile.allowed_key_algorithms}
    assert rules == {(KeyAlgorithm.ECDSA, 256), (KeyAlgorithm.RSA, 2048)}
    assert profile.allowed_ekus == (ExtendedKeyUsage.SERVER_AUTH,)


def test_a_new_certificate_has_no_expiry_until_issued() -> None:
    cert = ManagedCertificate(
        id="cert-1",
        name="web",
        common_name="example.test",
        owner_id="o",
        issuer_id="iss-local",
        renewal_policy_id="rp-default",
        created_at=T0,
        updated_at=T0,
    )
    assert cert.expires_at is None
    assert cert.status is CertificateStatus.PENDING
    assert dict(cert.tags) == {}


def test_agents_are_not_retired_by_default() -> None:
    agent = Agent(id="agent-1", name="a", hostname="h", registered_at=T0)
    assert (agent.retired_at, agent.status) == (None, AgentStatus.ONLINE)
    assert "hash" not in " ".join(f.name for f in dataclasses.fields(agent))
