"""The local CA issuer: persistence, sub-CA refusals, revocation state, CRL numbering."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certctl.connectors.issuers import IssuerConnector
from certctl.connectors.issuers.local import (
    LOCK,
    ROOT_CERT,
    ROOT_KEY,
    STATE,
    LocalCA,
    LocalCAConfig,
    LocalCAError,
)
from certctl.core.model import RevocationReason
from certctl.pki.chain import verify_chain
from certctl.pki.csr import build_csr
from certctl.pki.errors import CAError, PKIError
from certctl.pki.keys import ECDSA_P256, key_spec
from certctl.pki.names import SubjectAltNames
from certctl.pki.pem import fingerprint_sha256, load_certificates
from certctl.pki.profile import ProfileViolation, Rule
from certctl.testing.certs import (
    DEFAULT_PROFILE,
    intermediate_ca,
    key_usage,
    pooled_key,
    root_ca,
    self_signed_certificate,
    write_authority,
)

NOW = datetime(2025, 6, 1, tzinfo=UTC)
PASSPHRASE = "a passphrase of more than thirty-two bytes"
CSR = build_csr(pooled_key(), common_name="app.example", sans=SubjectAltNames(dns=("app.example",)))


def self_signed(data_dir: Path, **fields: object) -> LocalCAConfig:
    return replace(LocalCAConfig(data_dir=data_dir, passphrase=PASSPHRASE), **fields)  # type: ignore[arg-type]


def test_self_signed_root_is_created_once_sealed_and_private(tmp_path: Path) -> None:
    data = tmp_path / "iss-local"
    ca = LocalCA.open(self_signed(data), NOW)
    root = ca.authority.certificate
    assert key_spec(root.public_key()) == ECDSA_P256
    assert root.subject == root.issuer
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in (ROOT_CERT, ROOT_KEY, LOCK):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    assert load_certificates((data / ROOT_CERT).read_bytes()) == [root]
    sealed = (data / ROOT_KEY).read_bytes()
    assert b"PRIVATE KEY" not in sealed
    assert sorted(p.name for p in data.iterdir()) == sorted([ROOT_CERT, ROOT_KEY, LOCK])

    again = LocalCA.open(self_signed(data), NOW + timedelta(days=400))
    assert again.authority.certificate == root
    assert (data / ROOT_KEY).read_bytes() == sealed


def test_issued_material_describes_the_certificate(tmp_path: Path) -> None:
    ca = LocalCA.open(self_signed(tmp_path), NOW)
    issued = ca.issue(CSR, DEFAULT_PROFILE, NOW)
    leaf = load_certificates(issued.certificate_pem)[0]
    assert issued.serial == f"{leaf.serial_number:040x}"
    assert issued.fingerprint_sha256 == fingerprint_sha256(leaf)
    assert (issued.not_before, issued.not_after) == (
        leaf.not_valid_before_utc,
        leaf.not_valid_after_utc,
    )
    assert issued.chain_pem == (tmp_path / ROOT_CERT).read_bytes()
    roots = load_certificates(issued.chain_pem)
    assert verify_chain(leaf, [], roots, now=NOW, server_name="app.example")[-1] == roots[0]


def test_issue_enforces_the_profile(tmp_path: Path) -> None:
    ca: IssuerConnector = LocalCA.open(self_signed(tmp_path), NOW)
    with pytest.raises(ProfileViolation) as caught:
        ca.issue(CSR, replace(DEFAULT_PROFILE, required_san_patterns=(r".*\.internal",)), NOW)
    assert caught.value.rule is Rule.SAN_PATTERNS
    with pytest.raises(PKIError):
        ca.issue(b"-----BEGIN CERTIFICATE REQUEST-----\n", DEFAULT_PROFILE, NOW)


def test_leaves_live_the_configured_validity_capped_by_max_ttl_seconds(tmp_path: Path) -> None:
    ca = LocalCA.open(self_signed(tmp_path), NOW)
    assert ca.config.leaf_validity == timedelta(days=90)
    default = load_certificates(ca.issue(CSR, DEFAULT_PROFILE, NOW).certificate_pem)[0]
    assert default.not_valid_after_utc - default.not_valid_before_utc == timedelta(days=90)
    weekly = LocalCA.open(self_signed(tmp_path, leaf_validity=timedelta(days=7)), NOW)
    leaf = load_certificates(weekly.issue(CSR, DEFAULT_PROFILE, NOW).certificate_pem)[0]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=7)
    capped = replace(DEFAULT_PROFILE, max_ttl_seconds=86_400)
    leaf = load_certificates(weekly.issue(CSR, capped, NOW).certificate_pem)[0]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=1)


def test_wrong_passphrase_is_refused_naming_the_key_file(tmp_path: Path) -> None:
    LocalCA.open(self_signed(tmp_path), NOW)
    with pytest.raises(
        LocalCAError, match=f"CA key {tmp_path / ROOT_KEY}: .*CERTCTL_CONFIG_ENCRYPTION_KEY"
    ):
        LocalCA.open(
            self_signed(tmp_path, passphrase="another passphrase entirely, 32+ bytes"), NOW
        )


def test_a_key_file_from_another_root_does_not_open(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    LocalCA.open(self_signed(first), NOW)
    LocalCA.open(self_signed(second), NOW)
    (first / ROOT_KEY).write_bytes((second / ROOT_KEY).read_bytes())
    with pytest.raises(LocalCAError, match="moved to another owner"):
        LocalCA.open(self_signed(first), NOW)


def test_self_signed_mode_needs_a_passphrase(tmp_path: Path) -> None:
    with pytest.raises(
        LocalCAError, match="set CERTCTL_CONFIG_ENCRYPTION_KEY, or set ca_cert_path"
    ):
        LocalCA.open(self_signed(tmp_path, passphrase=None), NOW)
    assert not (tmp_path / ROOT_CERT).exists()


def test_a_key_without_its_certificate_is_an_interrupted_start_and_is_replaced(
    tmp_path: Path,
) -> None:
    first = LocalCA.open(self_signed(tmp_path), NOW)
    (tmp_path / ROOT_CERT).unlink()
    second = LocalCA.open(self_signed(tmp_path), NOW)
    assert second.authority.certificate != first.authority.certificate
    assert (
        LocalCA.open(self_signed(tmp_path), NOW).authority.certificate
        == second.authority.certificate
    )


def test_an_expired_root_is_refused(tmp_path: Path) -> None:
    LocalCA.open(self_signed(tmp_path, root_lifetime=timedelta(days=30)), NOW)
    with pytest.raises(CAError, match=f"CA certificate {tmp_path / ROOT_CERT} is valid only from"):
        LocalCA.open(self_signed(tmp_path), NOW + timedelta(days=31))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ca_cert_path": Path("/x/ca.pem")}, "ca_cert_path and ca_key_path must be set together"),
        ({"ca_key_path": Path("/x/ca.key")}, "ca_cert_path and ca_key_path must be set together"),
        ({"crl_url": "ldap://example/crl"}, "crl_url 'ldap://example/crl' is not an http"),
        ({"leaf_validity": timedelta(0)}, "leaf_validity 0:00:00 is under a second"),
    ],
)
def test_inconsistent_configuration_is_refused(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(LocalCAError, match=message):
        LocalCA.open(self_signed(tmp_path, **fields), NOW)


def test_sub_ca_issues_below_the_operator_hierarchy(tmp_path: Path) -> None:
    root = root_ca(NOW)
    issuing = intermediate_ca(root, NOW)
    cert_path, key_path = write_authority(issuing, tmp_path)
    config = LocalCAConfig(data_dir=tmp_path / "data", ca_cert_path=cert_path, ca_key_path=key_path)
    ca = LocalCA.open(config, NOW)
    issued = ca.issue(CSR, DEFAULT_PROFILE, NOW)
    assert load_certificates(issued.chain_pem) == [issuing.certificate, root.certificate]
    leaf = load_certificates(issued.certificate_pem)[0]
    path = verify_chain(
        leaf,
        load_certificates(issued.chain_pem),
        [root.certificate],
        now=NOW,
        server_name="app.example",
    )
    assert path == (leaf, issuing.certificate, root.certificate)
    assert not (tmp_path / "data" / ROOT_CERT).exists()


YEAR = timedelta(days=365)
CA_TRUE = x509.BasicConstraints(ca=True, path_length=None)


@pytest.mark.parametrize(
    ("constraints", "usage", "start", "message"),
    [
        (
            x509.BasicConstraints(ca=False, path_length=None),
            key_usage(key_cert_sign=True, crl_sign=True),
            NOW - YEAR,
            "is not a CA certificate .*supply the CA certificate, not a leaf",
        ),
        (
            CA_TRUE,
            key_usage(key_cert_sign=False, crl_sign=True),
            NOW - YEAR,
            "lacks the keyCertSign and cRLSign key usages",
        ),
        (
            CA_TRUE,
            key_usage(key_cert_sign=True, crl_sign=True),
            NOW - 2 * YEAR,
            "is valid only from .*supply a currently valid",
        ),
    ],
    ids=["not-ca", "no-cert-sign", "expired"],
)
def test_sub_ca_material_that_cannot_sign_is_refused_naming_the_file(
    tmp_path: Path,
    constraints: x509.BasicConstraints,
    usage: x509.KeyUsage,
    start: datetime,
    message: str,
) -> None:
    key = pooled_key()
    cert = self_signed_certificate(
        key,
        not_before=start,
        not_after=start + YEAR,
        basic_constraints=constraints,
        key_usage=usage,
    )
    cert_path, key_path = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = LocalCAConfig(data_dir=tmp_path / "data", ca_cert_path=cert_path, ca_key_path=key_path)
    with pytest.raises(CAError, match=f"^ca_cert_path {cert_path} {message}"):
        LocalCA.open(config, NOW)


def test_sub_ca_with_the_wrong_key_is_refused(tmp_path: Path) -> None:
    root = root_ca(NOW)
    cert_path, _ = write_authority(intermediate_ca(root, NOW), tmp_path)
    (tmp_path / "root").mkdir()
    _, other_key = write_authority(root, tmp_path / "root")
    config = LocalCAConfig(
        data_dir=tmp_path / "data", ca_cert_path=cert_path, ca_key_path=other_key
    )
    with pytest.raises(CAError, match=f"ca_cert_path {cert_path} does not match its private key"):
        LocalCA.open(config, NOW)


def test_unreadable_or_garbage_sub_ca_files_are_refused_naming_the_field(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"\x00\xff not pem at all")
    missing = tmp_path / "missing.pem"
    cert_path, key_path = write_authority(intermediate_ca(root_ca(NOW), NOW), tmp_path)
    cases = [
        (
            missing,
            key_path,
            f"ca_cert_path {missing} cannot be read \\(No such file or directory\\)",
        ),
        (garbage, key_path, f"ca_cert_path {garbage}: no complete PEM CERTIFICATE block"),
        (cert_path, garbage, f"ca_key_path {garbage}: private key does not parse"),
        (
            key_path,
            key_path,
            f"ca_cert_path {key_path}: expected a PEM CERTIFICATE block but found PRIVATE KEY",
        ),
    ]
    for cert, key, message in cases:
        config = LocalCAConfig(data_dir=tmp_path / "data", ca_cert_path=cert, ca_key_path=key)
        with pytest.raises(LocalCAError, match=message):
            LocalCA.open(config, NOW)


def crl_state(ca: LocalCA, now: datetime) -> tuple[int, dict[int, x509.ReasonFlags | None]]:
    crl = x509.load_der_x509_crl(ca.crl(now))
    assert crl.is_signature_valid(ca.authority.key.public_key())
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    reasons: dict[int, x509.ReasonFlags | None] = {}
    for entry in crl:
        found = [e.value for e in entry.extensions if isinstance(e.value, x509.CRLReason)]
        reasons[entry.serial_number] = found[0].reason if found else None
    return number, reasons


def test_revocations_and_crl_numbers_survive_reopening(tmp_path: Path) -> None:
    ca = LocalCA.open(self_signed(tmp_path), NOW)
    first = ca.issue(CSR, DEFAULT_PROFILE, NOW)
    second = ca.issue(CSR, DEFAULT_PROFILE, NOW)
    assert crl_state(ca, NOW) == (1, {})
    record = ca.revoke(first.serial, RevocationReason.KEY_COMPROMISE, NOW)
    assert record.serial == int(first.serial, 16)
    # Revoking again keeps the first record, whatever the new reason and time.
    assert ca.revoke(first.serial, RevocationReason.SUPERSEDED, NOW + timedelta(hours=1)) == record
    assert crl_state(ca, NOW) == (2, {record.serial: x509.ReasonFlags.key_compromise})

    reopened = LocalCA.open(self_signed(tmp_path), NOW + timedelta(days=1))
    reopened.revoke(second.serial.upper(), RevocationReason.UNSPECIFIED, NOW + timedelta(days=1))
    number, reasons = crl_state(reopened, NOW + timedelta(days=1))
    assert number == 3
    assert reasons == {record.serial: x509.ReasonFlags.key_compromise, int(second.serial, 16): None}
    assert stat.S_IMODE((tmp_path / STATE).stat().st_mode) == 0o600
    # Another handle on the same directory (another worker process) sees the same state.
    assert crl_state(ca, NOW)[0] == 4


def test_crl_carries_next_update_from_the_configuration(tmp_path: Path) -> None:
    ca = LocalCA.open(self_signed(tmp_path, crl_lifetime=timedelta(hours=6)), NOW)
    crl = x509.load_der_x509_crl(ca.crl(NOW))
    assert crl.next_update_utc == NOW + timedelta(hours=6)


def test_revoking_a_serial_no_certificate_has_is_refused(tmp_path: Path) -> None:
    ca = LocalCA.open(self_signed(tmp_path), NOW)
    with pytest.raises(PKIError, match="is not hexadecimal"):
        ca.revoke("serial-42", RevocationReason.KEY_COMPROMISE, NOW)


def test_revocation_state_of_another_ca_is_refused_at_open(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    LocalCA.open(self_signed(first), NOW).crl(NOW)
    LocalCA.open(self_signed(second), NOW)
    (second / STATE).write_bytes((first / STATE).read_bytes())
    with pytest.raises(LocalCAError, match=r"belongs to the CA with key id .*directory of its own"):
        LocalCA.open(self_signed(second), NOW)


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        json.dumps({"authority_key_id": "x", "crl_number": "seven", "revocations": []}).encode(),
    ],
)
def test_damaged_revocation_state_is_refused(tmp_path: Path, content: bytes) -> None:
    LocalCA.open(self_signed(tmp_path), NOW)
    (tmp_path / STATE).write_bytes(content)
    with pytest.raises(LocalCAError, match=r"is damaged .*restore it from a backup"):
        LocalCA.open(self_signed(tmp_path), NOW)
