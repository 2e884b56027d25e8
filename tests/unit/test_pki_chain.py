"""Path validation through cryptography's verifier: server and client usage, failures."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from certctl.core.model import ExtendedKeyUsage
from certctl.pki.chain import verify_chain
from certctl.pki.csr import build_csr, load_csr
from certctl.pki.errors import ChainError
from certctl.pki.names import SubjectAltNames
from certctl.pki.profile import enforce
from certctl.testing.certs import DEFAULT_PROFILE, intermediate_ca, pooled_key, root_ca

NOW = datetime(2025, 6, 1, tzinfo=UTC)
ROOT = root_ca(NOW)
ISSUING = intermediate_ca(ROOT, NOW)
OTHER_ROOT = root_ca(NOW, common_name="Unrelated Root")
NAMES = SubjectAltNames(
    dns=("*.apps.example", "db.example"), ips=(ipaddress.ip_address("10.1.2.3"),)
)


def leaf(*usages: ExtendedKeyUsage, names: SubjectAltNames = NAMES) -> x509.Certificate:
    request = load_csr(build_csr(pooled_key(), sans=names))
    profile = replace(DEFAULT_PROFILE, allowed_ekus=usages)
    return ISSUING.issue(request.public_key, enforce(request, profile), NOW).certificate


SERVER = leaf(ExtendedKeyUsage.SERVER_AUTH)


@pytest.mark.parametrize("name", ["web.apps.example", "db.example", "10.1.2.3"])
def test_server_path_is_leaf_issuing_root(name: str) -> None:
    path = verify_chain(
        SERVER, [ISSUING.certificate], [ROOT.certificate], now=NOW, server_name=name
    )
    assert path == (SERVER, ISSUING.certificate, ROOT.certificate)


def test_intermediates_may_come_in_any_order_with_strays() -> None:
    pool = [OTHER_ROOT.certificate, ROOT.certificate, ISSUING.certificate]
    path = verify_chain(SERVER, pool, [ROOT.certificate], now=NOW, server_name="db.example")
    assert path[-1] == ROOT.certificate


def test_client_certificates_validate_without_a_server_name() -> None:
    client = leaf(
        ExtendedKeyUsage.CLIENT_AUTH, names=SubjectAltNames(uris=("spiffe://example/agent",))
    )
    path = verify_chain(client, [ISSUING.certificate], [ROOT.certificate], now=NOW)
    assert path == (client, ISSUING.certificate, ROOT.certificate)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"server_name": "other.example"}, "does not validate"),
        ({"server_name": "a.b.apps.example"}, "does not validate"),
        ({}, "does not validate"),  # serverAuth-only leaf used as a client certificate
        ({"server_name": "db.example", "now": NOW + timedelta(days=91)}, "does not validate"),
        ({"server_name": "db.example", "roots": [OTHER_ROOT.certificate]}, "does not validate"),
        ({"server_name": "db.example", "intermediates": []}, "does not validate"),
        ({"server_name": "db.example", "roots": []}, "no trust anchors given"),
        ({"server_name": "not a name"}, "neither a DNS name nor an IP address"),
    ],
    ids=[
        "wrong-name",
        "wildcard-depth",
        "wrong-usage",
        "expired",
        "wrong-root",
        "no-intermediate",
        "no-roots",
        "bad-name",
    ],
)
def test_invalid_paths_are_chain_errors(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "intermediates": [ISSUING.certificate],
        "roots": [ROOT.certificate],
        "now": NOW,
        **kwargs,
    }
    with pytest.raises(ChainError, match=message):
        verify_chain(SERVER, **arguments)  # type: ignore[arg-type]
