"""PKI: in-process issuance from CSR, next to openssl's ECDSA P-256 speed on this machine.

One issuance verifies one CSR signature and makes one certificate signature, so the
baseline is openssl's sign+verify pair rate, 1 / (1/sign + 1/verify). Both sides run
single-threaded, so the figures are per core. The stage lines say where the time goes.
The "library calls alone" line is the part no issuer on this stack can skip: parse the
CSR, verify it, and make one signature, with no profile, names or certificate encoding;
the gap between it and the issuance rate is certctl's own work.
"""

from __future__ import annotations

import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from certctl.connectors.issuers.local import LocalCA, LocalCAConfig
from certctl.core.clock import SystemClock
from certctl.core.model import CertificateProfile
from certctl.pki.csr import build_csr, load_csr
from certctl.pki.keys import generate_key, signer
from certctl.pki.names import SubjectAltNames
from certctl.pki.profile import enforce

SECONDS = 3.0
ROUNDS = 3
POOL = 1000  # distinct CSRs, each with its own key, cycled through


def rate(operation: Callable[[int], object], seconds: float = SECONDS) -> float:
    """Calls per second of ``operation(i)`` over about ``seconds``, after a short warm-up."""
    for index in range(50):
        operation(index)
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            operation(count)
            count += 1
    return count / elapsed


def openssl_speed() -> tuple[float, float] | None:
    """(sign/s, verify/s) from `openssl speed -seconds 3 ecdsap256`, or None without openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    result = subprocess.run(
        [openssl, "speed", "-seconds", str(int(SECONDS)), "ecdsap256"],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(
        r"256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", result.stdout
    )
    if match is None:
        raise RuntimeError(f"cannot read openssl speed output:\n{result.stdout}")
    return float(match.group(1)), float(match.group(2))


def run() -> None:
    now = SystemClock().now()
    profile = CertificateProfile(id="bench", name="default")
    with tempfile.TemporaryDirectory() as data_dir:
        ca = LocalCA.open(LocalCAConfig(Path(data_dir), passphrase=secrets.token_hex(32)), now)
        csrs = [
            build_csr(
                generate_key(),
                common_name=f"host{index}.bench.example",
                sans=SubjectAltNames(dns=(f"host{index}.bench.example", "www.bench.example")),
            )
            for index in range(POOL)
        ]
        sign_as_ca = signer(ca.authority.key)
        ecdsa = ec.ECDSA(hashes.SHA256())

        def library_calls(index: int) -> None:
            csr = x509.load_pem_x509_csr(csrs[index % POOL])
            public_key = csr.public_key()
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            public_key.verify(csr.signature, csr.tbs_certrequest_bytes, ecdsa)
            sign_as_ca(csr.tbs_certrequest_bytes)

        # Interleaved rounds, medians reported: this machine's speed drifts by tens of
        # percent over seconds, and the ratio should compare like with like.
        issuance_rounds, floor_rounds = [], []
        for _ in range(ROUNDS):
            issuance_rounds.append(rate(lambda i: ca.issue(csrs[i % POOL], profile, now)))
            floor_rounds.append(rate(library_calls))
        issuance = statistics.median(issuance_rounds)
        floor = statistics.median(floor_rounds)

        requests = [load_csr(csr) for csr in csrs]
        grants = [enforce(request, profile) for request in requests]
        leaves = [
            ca.authority.issue(request.public_key, grant, now)
            for request, grant in zip(requests, grants, strict=True)
        ]
        stages = {
            "parse + verify CSR": rate(lambda i: load_csr(csrs[i % POOL])),
            "profile check": rate(lambda i: enforce(requests[i % POOL], profile)),
            "build + sign leaf": rate(
                lambda i: ca.authority.issue(requests[i % POOL].public_key, grants[i % POOL], now)
            ),
            "PEM + fingerprint": rate(
                lambda i: (leaves[i % POOL].pem, leaves[i % POOL].fingerprint_sha256)
            ),
        }

    key = ec.generate_private_key(ec.SECP256R1())
    message = b"x" * 400
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    library_sign = rate(lambda _: key.sign(message, ec.ECDSA(hashes.SHA256())))
    library_verify = rate(lambda _: public.verify(signature, message, ec.ECDSA(hashes.SHA256())))

    print(
        f"issuance from CSR (verify CSR + profile + sign + PEM), one core: {issuance:8.0f} certs/s"
        f"  (rounds: {', '.join(f'{r:.0f}' for r in issuance_rounds)})"
    )
    for stage, per_second in stages.items():
        print(f"  stage {stage:<22} {1e6 / per_second:7.1f} us")
    print(
        f"library calls alone (load CSR, verify it, sign its bytes as the CA): {floor:8.0f}/s"
        f"  (rounds: {', '.join(f'{r:.0f}' for r in floor_rounds)})"
    )
    print(f"ratio issuance / library calls alone:      {issuance / floor:.2f}")
    print(
        f"cryptography ECDSA P-256 in-process: sign {library_sign:8.0f}/s  "
        f"verify {library_verify:8.0f}/s  pair {pair(library_sign, library_verify):8.0f}/s"
    )
    speed = openssl_speed()
    if speed is None:
        print("openssl not installed (apt-get install openssl): no baseline")
        return
    sign, verify = speed
    print(
        f"openssl speed -seconds 3 ecdsap256:  sign {sign:8.0f}/s  verify {verify:8.0f}/s  "
        f"pair {pair(sign, verify):8.0f}/s"
    )
    print(f"ratio issuance / openssl sign+verify pair: {issuance / pair(sign, verify):.2f}")
    print(f"ratio issuance / openssl sign alone:       {issuance / sign:.3f}")


def pair(sign: float, verify: float) -> float:
    """Rate of one sign plus one verify, the crypto an issuance cannot avoid."""
    return 1 / (1 / sign + 1 / verify)
