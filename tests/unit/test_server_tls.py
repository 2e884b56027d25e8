"""Server TLS material: every preflight refusal names its variable, the bootstrap pair,
and in-place reloads that keep the old certificate when the new one is bad."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from certctl.config import ConfigError
from certctl.core.model import ExtendedKeyUsage
from certctl.pki.keys import ECDSA_P256, ED25519, RSA_2048, KeySpec, SigningKey, private_key_pem
from certctl.pki.names import SubjectAltNames
from certctl.pki.pem import certificates_pem, fingerprint_sha256, load_certificates
from certctl.pki.profile import Grant
from certctl.server.tls import (
    CERT_VAR,
    HOST_VAR,
    KEY_VAR,
    ReloadableTLS,
    TLSBootstrapError,
    TLSPreflightError,
    init_tls,
    preflight,
)
from certctl.testing.certs import pooled_key, root_ca, unacceptable_keys

NOW = datetime.now(UTC).replace(microsecond=0)
# Old enough that leaves issued a month ago (now expired) still fall inside its validity.
CA = root_ca(NOW - timedelta(days=365), common_name="Server TLS Test Root")
LOCAL = SubjectAltNames(
    dns=("localhost",), ips=(ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
)


def write_pair(
    directory: Path,
    *,
    names: SubjectAltNames = LOCAL,
    issued: datetime = NOW,
    lifetime: timedelta = timedelta(days=30),
    key: SigningKey | None = None,
    spec: KeySpec = ECDSA_P256,
    stem: str = "server",
) -> tuple[Path, Path]:
    """A leaf from ``CA`` (with the CA after it) and its key, as an operator deploys them."""
    key = key or pooled_key(spec)
    grant = Grant(
        common_name=None,
        sans=names,
        key=spec,
        extended_key_usages=(ExtendedKeyUsage.SERVER_AUTH,),
        lifetime=lifetime,
        must_staple=False,
    )
    leaf = CA.issue(key.public_key(), grant, issued).certificate
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}-key.pem"
    cert_path.write_bytes(certificates_pem((leaf, CA.certificate)))
    key_path.write_bytes(private_key_pem(key))
    return cert_path, key_path


def refusal(
    cert: Path | None, key: Path | None, *, host: str = "127.0.0.1", now: datetime = NOW
) -> TLSPreflightError:
    with pytest.raises(TLSPreflightError) as caught:
        preflight(cert, key, host, now)
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.variable in message
    return caught.value


def served_fingerprint(context: ssl.SSLContext) -> str:
    """Handshake in memory against ``context`` and fingerprint what it presented."""
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    from_server, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, from_client)
    server = context.wrap_bio(to_server, from_server, server_side=True)
    pending = [client, server]
    for _ in range(10):
        for side in list(pending):
            try:
                side.do_handshake()
                pending.remove(side)
            except ssl.SSLWantReadError:
                pass
        to_server.write(from_client.read())
        to_client.write(from_server.read())
    assert not pending
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint_sha256(x509.load_der_x509_certificate(der))


def leaf_fingerprint(cert_path: Path) -> str:
    return fingerprint_sha256(load_certificates(cert_path.read_bytes())[0])


# --------------------------------------------------------------------------- preflight


def test_good_pair_passes(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "LOCALHOST"):
        preflight(cert, key, host, NOW)


def test_refusals_are_config_errors() -> None:
    assert issubclass(TLSPreflightError, ConfigError)


@pytest.mark.parametrize(("missing", "variable"), [("cert", CERT_VAR), ("key", KEY_VAR)])
def test_unset_path_names_its_variable_and_init_tls(
    tmp_path: Path, missing: str, variable: str
) -> None:
    cert, key = write_pair(tmp_path)
    error = refusal(None if missing == "cert" else cert, None if missing == "key" else key)
    assert error.variable == variable
    assert "certctl server init-tls --dir DIR" in str(error)


@pytest.mark.parametrize(("which", "variable"), [("cert", CERT_VAR), ("key", KEY_VAR)])
@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_unreadable_file_names_its_variable(
    tmp_path: Path, which: str, variable: str, problem: str
) -> None:
    cert, key = write_pair(tmp_path)
    broken = tmp_path / "elsewhere"
    if problem == "directory":
        broken.mkdir()
    error = refusal(broken if which == "cert" else cert, broken if which == "key" else key)
    assert error.variable == variable
    assert "cannot be read" in str(error)


def test_certificate_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    cert.write_bytes(b"not a certificate\n")
    assert refusal(cert, key).variable == CERT_VAR


def test_key_file_holding_a_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    key.write_bytes(cert.read_bytes())
    assert refusal(cert, key).variable == KEY_VAR


def test_encrypted_key_is_refused(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    key.write_bytes(
        pooled_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    error = refusal(cert, key)
    assert error.variable == KEY_VAR
    assert "unencrypted" in str(error)


def test_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = write_pair(tmp_path)
    _, other_key = write_pair(tmp_path, key=pooled_key(ECDSA_P256, 1), stem="other")
    error = refusal(cert, other_key)
    assert error.variable == KEY_VAR
    assert "is not the private key" in str(error)


def test_expired_certificate_is_refused(tmp_path: Path) -> None:
    """The earlier implementation booted with an expired certificate; we do not."""
    cert, key = write_pair(tmp_path, issued=NOW - timedelta(days=30), lifetime=timedelta(days=1))
    error = refusal(cert, key)
    assert error.variable == CERT_VAR
    assert "expired" in str(error)


def test_not_yet_valid_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, issued=NOW + timedelta(days=10))
    error = refusal(cert, key)
    assert error.variable == CERT_VAR
    assert "not valid before" in str(error)


@pytest.mark.parametrize("host", ["10.0.0.1", "::2", "localhost", "a.b.example.com", "example.com"])
def test_host_not_named_by_the_certificate_is_refused(tmp_path: Path, host: str) -> None:
    names = SubjectAltNames(dns=("*.example.com",), ips=(ipaddress.ip_address("127.0.0.1"),))
    cert, key = write_pair(tmp_path, names=names)
    error = refusal(cert, key, host=host)
    assert error.variable == HOST_VAR
    assert f"--host {host}" in str(error)


def test_ip_host_needs_an_ip_san_not_a_dns_san(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, names=SubjectAltNames(dns=("127.0.0.1",)))
    assert refusal(cert, key, host="127.0.0.1").variable == HOST_VAR


def test_wildcard_covers_exactly_one_label(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, names=SubjectAltNames(dns=("*.example.com",)))
    preflight(cert, key, "api.example.com", NOW)
    preflight(cert, key, "API.Example.COM.", NOW)
    for host in ("example.com", "a.b.example.com"):
        assert refusal(cert, key, host=host).variable == HOST_VAR


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_wildcard_bind_address_accepts_any_certificate(tmp_path: Path, host: str) -> None:
    cert, key = write_pair(tmp_path, names=SubjectAltNames(dns=("certctl.example.com",)))
    preflight(cert, key, host, NOW)


def test_material_openssl_refuses_is_refused_before_binding(tmp_path: Path) -> None:
    small_rsa = unacceptable_keys()[0]
    cert, key = write_pair(tmp_path, key=small_rsa, spec=RSA_2048)
    error = refusal(cert, key)
    assert error.variable == CERT_VAR
    assert "refused by OpenSSL" in str(error)


# --------------------------------------------------------------------------- init_tls


def test_init_tls_material_passes_preflight_for_the_local_names(tmp_path: Path) -> None:
    made = init_tls(tmp_path / "tls", hosts=("certctl.internal", "10.1.2.3"), force=False, now=NOW)
    for host in ("127.0.0.1", "localhost", "::1", "certctl.internal", "10.1.2.3"):
        preflight(made.cert_path, made.key_path, host, NOW)
    chain = load_certificates(made.cert_path.read_bytes())
    assert chain[1] == load_certificates(made.ca_path.read_bytes())[0]
    chain[0].verify_directly_issued_by(chain[1])
    assert made.not_after == chain[0].not_valid_after_utc


def test_init_tls_key_is_private(tmp_path: Path) -> None:
    made = init_tls(tmp_path, hosts=(), force=False, now=NOW)
    assert stat.S_IMODE(made.key_path.stat().st_mode) == 0o600
    for public in (made.cert_path, made.ca_path):
        assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem", "server-key.pem", "server.pem"]


@pytest.mark.parametrize("existing", ["ca.pem", "server.pem", "server-key.pem"])
def test_init_tls_refuses_to_overwrite_without_force(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("keep me\n")
    with pytest.raises(TLSBootstrapError, match=rf"{existing} already exists; pass --force"):
        init_tls(tmp_path, hosts=(), force=False, now=NOW)
    assert (tmp_path / existing).read_text() == "keep me\n"
    assert [p.name for p in tmp_path.iterdir()] == [existing]


def test_init_tls_force_replaces_the_pair(tmp_path: Path) -> None:
    first = init_tls(tmp_path, hosts=(), force=False, now=NOW)
    before = leaf_fingerprint(first.cert_path)
    second = init_tls(tmp_path, hosts=(), force=True, now=NOW)
    assert leaf_fingerprint(second.cert_path) != before
    preflight(second.cert_path, second.key_path, "localhost", NOW)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "not a name", "ops@example.com"])
def test_init_tls_refuses_hosts_clients_cannot_dial(tmp_path: Path, host: str) -> None:
    with pytest.raises(TLSBootstrapError, match="--host"):
        init_tls(tmp_path, hosts=(host,), force=False, now=NOW)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- reloads


def test_reload_swaps_the_certificate_in_the_same_context(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    tls = ReloadableTLS(cert, key, "127.0.0.1", NOW)
    context = tls.context
    assert served_fingerprint(context) == leaf_fingerprint(cert)
    write_pair(tmp_path, key=pooled_key(ECDSA_P256, 1))
    with capture_logs() as logs:
        assert tls.reload(NOW)
    assert tls.context is context
    assert served_fingerprint(context) == leaf_fingerprint(cert)
    assert tls.certificate == load_certificates(cert.read_bytes())[0]
    assert logs[-1]["log_level"] == "info"


def test_reload_with_a_bad_pair_keeps_the_old_certificate(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    tls = ReloadableTLS(cert, key, "127.0.0.1", NOW)
    served = served_fingerprint(tls.context)
    write_pair(tmp_path, key=pooled_key(ECDSA_P256, 1), stem="next")
    key.write_bytes((tmp_path / "next-key.pem").read_bytes())  # half-rotated: new key only
    with capture_logs() as logs:
        assert not tls.reload(NOW)
    assert served_fingerprint(tls.context) == served
    assert logs == [
        {
            "event": "tls certificate reload refused; still serving the previous certificate",
            "log_level": "error",
            "logger": "certctl.server.tls",
            "variable": KEY_VAR,
            "reason": logs[0]["reason"],
            "fingerprint": served,
        }
    ]
    assert "is not the private key" in logs[0]["reason"]


def test_reload_of_an_expired_pair_keeps_the_old_certificate(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    tls = ReloadableTLS(cert, key, "127.0.0.1", NOW)
    served = served_fingerprint(tls.context)
    with capture_logs() as logs:
        assert not tls.reload(NOW + timedelta(days=31))
    assert served_fingerprint(tls.context) == served
    assert logs[0]["variable"] == CERT_VAR


def test_reload_refuses_a_key_type_change(tmp_path: Path) -> None:
    """OpenSSL keeps one certificate per key type: loading an Ed25519 pair over an ECDSA
    one would leave the ECDSA certificate served to clients that prefer it."""
    cert, key = write_pair(tmp_path)
    tls = ReloadableTLS(cert, key, "127.0.0.1", NOW)
    served = served_fingerprint(tls.context)
    write_pair(tmp_path, key=pooled_key(ED25519), spec=ED25519)
    preflight(cert, key, "127.0.0.1", NOW)
    with capture_logs() as logs:
        assert not tls.reload(NOW)
    assert served_fingerprint(tls.context) == served
    assert "restart the server" in logs[0]["reason"]


def test_constructor_runs_preflight(tmp_path: Path) -> None:
    with pytest.raises(TLSPreflightError) as caught:
        ReloadableTLS(None, None, "127.0.0.1", NOW)
    assert caught.value.variable == CERT_VAR


def test_context_is_tls13_only_with_h2_alpn(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    context = ReloadableTLS(cert, key, "127.0.0.1", NOW).context
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.options & ssl.OP_NO_COMPRESSION
