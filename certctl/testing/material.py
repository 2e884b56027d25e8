"""Certificate material for deploy tests and benchmarks: a root, an intermediate, leaves.

ECDSA P-256 throughout because it is the agent's default and fast to generate, so a
property test can hold a pool of versions without slowing every example down.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certctl.connectors.targets.base import Material


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class ScratchCA:
    """A root and one intermediate; leaves are signed by the intermediate."""

    def __init__(self, name: str = "certctl test", now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = self._sign(
            _name(f"{name} root"),
            root_key.public_key(),
            _name(f"{name} root"),
            root_key,
            ca=True,
            days=3650,
        )
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._sign(
            _name(f"{name} intermediate"),
            self._key.public_key(),
            root.subject,
            root_key,
            ca=True,
            days=1825,
        )
        self.root = root

    def _sign(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        *,
        ca: bool,
        days: float,
        dns: str | None = None,
        start: datetime | None = None,
    ) -> x509.Certificate:
        begin = start or self.now - timedelta(hours=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(begin)
            .not_valid_after(begin + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if dns is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    def issue(self, common_name: str, *, days: float = 30, expired: bool = False) -> Material:
        """A fresh key and leaf; ``expired`` backdates it so it ended an hour ago."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = self.now - timedelta(days=days, hours=1) if expired else None
        leaf = self._sign(
            _name(common_name),
            key.public_key(),
            self.intermediate.subject,
            self._key,
            ca=False,
            days=days,
            dns=common_name,
            start=start,
        )
        return Material(
            cert_pem=_pem(leaf),
            chain_pem=_pem(self.intermediate),
            key_pem=_key_pem(key),
        )
