"""The pieces both stores share: row encoding, query conditions, cursors, the secret rule,
and the shape of the protocol itself."""

from __future__ import annotations

import inspect
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType

import pytest
from conftest_store import PASSPHRASE, T0, certificate, event, issuer, policy, version

from certctl.core.errors import CertctlError
from certctl.core.model import (
    CLOSED_CERTIFICATE_STATUSES,
    AlertSeverity,
    CertificateProfile,
    CertificateStatus,
    KeyAlgorithm,
    KeyRule,
    NotificationChannel,
)
from certctl.pki.errors import SealError
from certctl.store import _sql
from certctl.store._crud import StoreOperations
from certctl.store.base import DUE_STATUSES, Store
from certctl.store.errors import InvalidCursor, StoreError
from certctl.store.memory import MemoryStore
from certctl.store.migrate import available
from certctl.store.postgres import PostgresStore
from certctl.store.query import Condition, check_limit, decode_cursor, encode_cursor
from certctl.store.rows import AUDIT, CERTIFICATES, POLICIES, PROFILES, VERSIONS, json_value
from certctl.store.secrets import open_secret, seal_secret, split_secret


def test_entities_survive_encoding() -> None:
    tuned = policy(
        alert_thresholds_days=(9, 1),
        alert_severity_map=MappingProxyType({9: AlertSeverity.WARNING}),
        alert_channels=MappingProxyType({AlertSeverity.WARNING: (NotificationChannel.SLACK,)}),
    )
    profile = CertificateProfile(
        "p", "p", allowed_key_algorithms=(KeyRule(KeyAlgorithm.RSA, 3072),)
    )
    cert = certificate(sans=("a", "b"), tags={"k": "v"}, target_ids=())
    for table, entity in (
        (POLICIES, tuned),
        (PROFILES, profile),
        (VERSIONS, version()),
        (CERTIFICATES, cert),
        (AUDIT, event(details={"n": 1})),
    ):
        row = table.encode(entity)
        assert table.decode({**row, "target_ids": []}) == entity


def test_encoding_normalises_like_postgres() -> None:
    paris = timezone(timedelta(hours=1))
    row = CERTIFICATES.encode(certificate(created_at=T0.astimezone(paris)))
    assert row["created_at"].tzinfo is UTC
    assert row["created_at"] == T0
    assert json_value("x", {"a": (1, [2, (3,)])}) == {"a": [1, [2, [3]]]}
    assert CERTIFICATES.encode(certificate(status=CertificateStatus.ACTIVE))["status"] == "Active"


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ({"a": "x\x00"}, ValueError, r"x\.a contains a NUL"),
        ({"a\x00": 1}, ValueError, "key contains a NUL"),
        ({1: "a"}, TypeError, "JSON object keys are text"),
        ({"a": float("nan")}, ValueError, "must be finite"),
        ({"a": {1, 2}}, ValueError, "use JSON values only"),
        ({"a": "\ud800"}, ValueError, "lone surrogates"),
    ],
)
def test_json_postgres_would_reject_is_refused(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        json_value("x", value)


def test_scalar_limits() -> None:
    with pytest.raises(ValueError, match="use a whole number from"):
        VERSIONS.encode(replace(version(), key_size=2**31))
    with pytest.raises(ValueError, match=r"ManagedCertificate\.status is 'active'"):
        CERTIFICATES.encode(certificate(status="active"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pass a value of the field's type"):
        CERTIFICATES.encode(certificate(name=3.5))  # type: ignore[arg-type]


def test_conditions_follow_sql_null_rules() -> None:
    row = {"a": None, "b": 2, "c": "x"}
    assert not Condition("a", "=", None).matches(row)
    assert not Condition("a", "<", 5).matches(row)
    assert Condition("b", "<=", 2).matches(row)
    assert Condition("b", ">=", 2).matches(row)
    assert not Condition("b", "<", 2).matches(row)
    assert Condition("c", "in", ["x", "y"]).matches(row)
    assert not Condition("c", "in", []).matches(row)


def test_cursor_round_trip_and_tampering() -> None:
    when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(when, "cert-é")) == (when, "cert-é")
    for bad in ("", "!!!", "bm90IGpzb24", encode_cursor(when, "x")[:-3], "WzEsMl0"):
        with pytest.raises(InvalidCursor, match="omit it to start from the beginning"):
            decode_cursor(bad)
    naive = encode_cursor(when.replace(tzinfo=None), "x")
    with pytest.raises(InvalidCursor):
        decode_cursor(naive)


@pytest.mark.parametrize("limit", [0, -1, 1001, True, 2.0])
def test_limits_are_bounded(limit: object) -> None:
    with pytest.raises(ValueError, match="pass a whole number from 1 to 1000"):
        check_limit(limit)  # type: ignore[arg-type]


def test_secret_rule() -> None:
    public, secret = split_secret("Issuer.config", {"url": "u", "secret": {"token": ("a",)}})
    assert (public, secret) == ({"url": "u"}, {"token": ["a"]})
    assert split_secret("Issuer.config", {"url": "u"}) == ({"url": "u"}, None)
    assert seal_secret("issuers", "i", {}, PASSPHRASE) is None
    blob = seal_secret("issuers", "i", {"token": "t"}, PASSPHRASE)
    assert blob is not None
    assert dict(open_secret("issuers", "i", blob, PASSPHRASE)) == {"token": "t"}
    assert dict(open_secret("issuers", "i", None, PASSPHRASE)) == {}
    for table, row_id in (("issuers", "j"), ("deployment_targets", "i")):
        with pytest.raises(SealError):
            open_secret(table, row_id, blob, PASSPHRASE)
    with pytest.raises(ValueError, match="make it a JSON object"):
        split_secret("Target.config", issuer(config={"secret": ["x"]}).config)


def test_both_stores_implement_every_protocol_operation_alike() -> None:
    operations = [
        name
        for name, member in inspect.getmembers(Store)
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    ]
    assert len(operations) > 50
    for name in operations:
        expected = inspect.signature(getattr(Store, name))
        for impl in (MemoryStore, PostgresStore):
            assert inspect.signature(getattr(impl, name)) == expected, (impl.__name__, name)


def test_every_protocol_operation_is_written_once_for_both_stores() -> None:
    """The backends supply primitives only: an operation either of them defined itself
    would be a second copy of the protocol that the differential test alone guards."""
    backend_specific = {"ready"}
    operations = [
        name
        for name, member in inspect.getmembers(Store)
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    ]
    for name in set(operations) - backend_specific:
        shared = getattr(StoreOperations, name)
        for impl in (MemoryStore, PostgresStore):
            assert getattr(impl, name) is shared, (impl.__name__, name)


def test_store_errors_are_certctl_errors() -> None:
    assert issubclass(StoreError, CertctlError)


def test_closed_statuses_come_from_the_one_set() -> None:
    """The agent-dependency count leaves closed certificates out with the model's set, so a
    closing status added to the model is left out there too."""
    for status in CLOSED_CERTIFICATE_STATUSES:
        assert f"'{status.value}'" in _sql.DEPENDENCIES
    assert not DUE_STATUSES & CLOSED_CERTIFICATE_STATUSES


def test_migrations_ship_with_the_package() -> None:
    migrations = available()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert "CREATE TABLE managed_certificates" in migrations[0].sql
    assert len({m.checksum for m in migrations}) == len(migrations)
