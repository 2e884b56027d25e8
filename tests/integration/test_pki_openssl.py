"""The local CA against the openssl command line: chains verify, CRLs parse and revoke,
and a new process on the same data dir keeps issuing under the same root.

Runs at the real time, because openssl verifies at the real time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certctl.connectors.issuers.local import LocalCA, LocalCAConfig
from certctl.core.clock import SystemClock
from certctl.core.model import ExtendedKeyUsage, RevocationReason
from certctl.pki.csr import build_csr
from certctl.pki.keys import ECDSA_P256, ECDSA_P384, ED25519, RSA_2048, KeySpec
from certctl.pki.names import SubjectAltNames
from certctl.pki.pem import load_certificates
from certctl.testing.certs import (
    ANY_KEY_RULES,
    DEFAULT_PROFILE,
    intermediate_ca,
    pooled_key,
    root_ca,
    write_authority,
    write_certificates,
)

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(
    OPENSSL is None,
    reason="openssl is not installed; install it with `apt-get install openssl`",
)

PASSPHRASE = "integration passphrase, comfortably over 32 bytes"
PROFILE = replace(
    DEFAULT_PROFILE,
    allowed_key_algorithms=ANY_KEY_RULES,
    allowed_ekus=(ExtendedKeyUsage.SERVER_AUTH, ExtendedKeyUsage.CLIENT_AUTH),
    must_staple=True,
)
NAMES = SubjectAltNames(dns=("app.example", "*.app.example"), emails=("ops@app.example",))


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPENSSL or "openssl", *map(str, args)], capture_output=True, text=True, check=False
    )


def verify(root: Path, leaf: Path, intermediate: Path | None = None) -> None:
    """`openssl verify -CAfile root.pem [-untrusted intermediate.pem] leaf.pem`, then the
    same under -x509_strict, which also checks the RFC 5280 encoding rules."""
    untrusted = () if intermediate is None else ("-untrusted", intermediate)
    for strict in ((), ("-x509_strict",)):
        result = openssl("verify", *strict, "-CAfile", root, *untrusted, leaf)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == f"{leaf}: OK"


def issue(ca: LocalCA, spec: KeySpec, path: Path) -> str:
    csr = build_csr(pooled_key(spec), common_name="app.example", sans=NAMES)
    issued = ca.issue(csr, PROFILE, SystemClock().now(), ttl=timedelta(days=30))
    path.write_bytes(issued.certificate_pem)
    return issued.serial


@pytest.mark.parametrize("spec", [ECDSA_P256, ECDSA_P384, RSA_2048, ED25519], ids=str)
def test_self_signed_root_leaves_pass_openssl_verify(tmp_path: Path, spec: KeySpec) -> None:
    ca = LocalCA.open(
        LocalCAConfig(data_dir=tmp_path / "ca", passphrase=PASSPHRASE), SystemClock().now()
    )
    issue(ca, spec, tmp_path / "leaf.pem")
    root = write_certificates(tmp_path / "root.pem", ca.authority.certificate)
    verify(root, tmp_path / "leaf.pem")
    text = openssl("x509", "-in", tmp_path / "leaf.pem", "-noout", "-text").stdout
    assert re.search(r"TLS Feature:\s*\n\s*status_request", text)
    assert "CA:FALSE" in text


def test_sub_ca_leaves_pass_openssl_verify_with_the_intermediate_untrusted(tmp_path: Path) -> None:
    now = SystemClock().now()
    root = root_ca(now)
    issuing = intermediate_ca(root, now)
    cert_path, key_path = write_authority(issuing, tmp_path)
    ca = LocalCA.open(
        LocalCAConfig(data_dir=tmp_path / "ca", ca_cert_path=cert_path, ca_key_path=key_path), now
    )
    issue(ca, ECDSA_P256, tmp_path / "leaf.pem")
    verify(
        write_certificates(tmp_path / "root.pem", root.certificate),
        tmp_path / "leaf.pem",
        write_certificates(tmp_path / "intermediate.pem", issuing.certificate),
    )
    # Without the intermediate the leaf does not chain: the check above is not vacuous.
    alone = openssl("verify", "-CAfile", tmp_path / "root.pem", tmp_path / "leaf.pem")
    assert alone.returncode != 0


def test_openssl_reads_the_crl_and_rejects_the_revoked_leaf(tmp_path: Path) -> None:
    now = SystemClock().now()
    ca = LocalCA.open(
        LocalCAConfig(
            data_dir=tmp_path / "ca", passphrase=PASSPHRASE, crl_url="http://pki.example/local.crl"
        ),
        now,
    )
    compromised = issue(ca, ECDSA_P256, tmp_path / "compromised.pem")
    superseded = issue(ca, ECDSA_P256, tmp_path / "superseded.pem")
    unspecified = issue(ca, ECDSA_P256, tmp_path / "unspecified.pem")
    issue(ca, ECDSA_P256, tmp_path / "good.pem")
    ca.revoke(compromised, RevocationReason.KEY_COMPROMISE, now)
    ca.revoke(superseded, RevocationReason.SUPERSEDED, now)
    ca.revoke(unspecified, RevocationReason.UNSPECIFIED, now)
    ca.crl(now)
    (tmp_path / "crl.der").write_bytes(ca.crl(now))

    text = openssl("crl", "-inform", "DER", "-in", tmp_path / "crl.der", "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert re.search(r"CRL Number:\s*\n\s*2\n", text.stdout)
    entries = text.stdout.split("Serial Number: ")[1:]
    # openssl prints serials without leading zero octets, we print all 40 hex digits:
    # compare them as the integers they are.
    listed = {int(entry.split()[0], 16): entry for entry in entries}
    assert set(listed) == {int(s, 16) for s in (compromised, superseded, unspecified)}
    assert "Key Compromise" in listed[int(compromised, 16)]
    assert "Superseded" in listed[int(superseded, 16)]
    assert "CRL Reason Code" not in listed[int(unspecified, 16)]

    root = write_certificates(tmp_path / "root.pem", ca.authority.certificate)
    signature = openssl(
        "crl", "-inform", "DER", "-in", tmp_path / "crl.der", "-CAfile", root, "-noout"
    )
    assert signature.returncode == 0
    assert "verify OK" in signature.stderr + signature.stdout
    crl_pem = tmp_path / "crl.pem"
    assert (
        openssl("crl", "-inform", "DER", "-in", tmp_path / "crl.der", "-out", crl_pem).returncode
        == 0
    )
    checked = ("verify", "-crl_check", "-CRLfile", crl_pem, "-CAfile", root)
    assert openssl(*checked, tmp_path / "good.pem").returncode == 0
    revoked = openssl(*checked, tmp_path / "compromised.pem")
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr


RESTARTED_ISSUER = """
import sys
from pathlib import Path
from certctl.connectors.issuers.local import LocalCA, LocalCAConfig
from certctl.core.clock import SystemClock
from certctl.core.model import CertificateProfile

data_dir, csr_path, leaf_path, crl_path = map(Path, sys.argv[1:])
config = LocalCAConfig(data_dir=data_dir, passphrase=sys.stdin.read())
ca = LocalCA.open(config, SystemClock().now())
profile = CertificateProfile(id="profile-default", name="default")
issued = ca.issue(csr_path.read_bytes(), profile, SystemClock().now())
leaf_path.write_bytes(issued.certificate_pem + issued.chain_pem)
crl_path.write_bytes(ca.crl(SystemClock().now()))
"""


def test_a_new_process_on_the_same_data_dir_issues_under_the_same_root(tmp_path: Path) -> None:
    data = tmp_path / "ca"
    first = LocalCA.open(LocalCAConfig(data_dir=data, passphrase=PASSPHRASE), SystemClock().now())
    before = issue(first, ECDSA_P256, tmp_path / "before.pem")
    first.revoke(before, RevocationReason.SUPERSEDED, SystemClock().now())
    first.crl(SystemClock().now())
    root = write_certificates(tmp_path / "root.pem", first.authority.certificate)

    csr = tmp_path / "restart.csr"
    csr.write_bytes(build_csr(pooled_key(ECDSA_P256, 1), common_name="after.example"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    leaf, crl = tmp_path / "after.pem", tmp_path / "after.crl"
    child = subprocess.run(
        [sys.executable, "-c", RESTARTED_ISSUER, data, csr, leaf, crl],
        input=PASSPHRASE,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    served = load_certificates(leaf.read_bytes())
    assert served[1] == first.authority.certificate
    verify(root, leaf)
    verify(root, tmp_path / "before.pem")
    restarted_crl = x509.load_der_x509_crl(crl.read_bytes())
    assert restarted_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert restarted_crl.get_revoked_certificate_by_serial_number(int(before, 16)) is not None
