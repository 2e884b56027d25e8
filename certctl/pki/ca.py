"""Certificate authorities: checking CA material, making roots and sub-CAs, signing grants.

A ``CertificateAuthority`` is loaded once and reused for every signature: the key
identifier, the encoded extensions every leaf shares, the issuer name, the signature
algorithm and the chain PEM are computed at load, so issuing a leaf does only the work
that differs per certificate (see ``docs/performance.md``).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtensionOID, NameOID

from certctl.core.model import ExtendedKeyUsage, KeyAlgorithm
from certctl.pki import der
from certctl.pki.errors import CAError, PKIError
from certctl.pki.keys import (
    SignatureHash,
    SigningKey,
    key_identifier,
    signature_hash,
    signer,
    subject_public_key_info,
)
from certctl.pki.pem import (
    certificates_pem,
    fingerprint_sha256,
    key_matches_certificate,
    pem_encode,
)
from certctl.pki.profile import Grant, eku_oid

# 159 random bits: positive, top bit of 20 octets clear, so DER never needs a 21st octet
# (RFC 5280 caps serials at 20 octets) and the CA/B minimum of 64 random bits is exceeded.
SERIAL_BITS = 159
# Certificates start a little in the past so a client whose clock lags ours still accepts
# one deployed seconds after issuance; never by more than a tenth of the lifetime, so a
# short-lived certificate keeps nearly all of its life. The lifetime counts from that start.
BACKDATE = timedelta(minutes=5)

_TLS_USAGES = {ExtendedKeyUsage.SERVER_AUTH, ExtendedKeyUsage.CLIENT_AUTH}
_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_STATUS_REQUEST = x509.TLSFeature([x509.TLSFeatureType.status_request])
_MUST_STAPLE = der.encode_extension(x509.Extension(_STATUS_REQUEST.oid, False, _STATUS_REQUEST))
# RFC 5280 4.2.1.6: with an empty subject the SAN carries the identity and must be
# critical; keyed by "the subject is empty".
_SAN_PREFIX = {
    empty: der.extension_prefix(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, empty)
    for empty in (False, True)
}
_SKI_PREFIX = der.extension_prefix(ExtensionOID.SUBJECT_KEY_IDENTIFIER, False)
_VERSION_3 = der.explicit(0, der.integer(2))
_EMPTY_NAME = x509.Name([]).public_bytes()


def format_serial(serial: int) -> str:
    """The 40-digit lowercase hex form stored and shown everywhere."""
    return f"{serial:040x}"


def parse_serial(text: str) -> int:
    """A serial as an integer, refusing what no RFC 5280 certificate can carry."""
    try:
        serial = int(text, 16)
    except ValueError:
        raise PKIError(
            f"serial {text[:64]!r} is not hexadecimal; pass the serial as issued."
        ) from None
    if not 0 < serial < 1 << 160:
        raise PKIError(f"serial {text[:64]!r} is outside 1..2^160-1; pass the serial as issued.")
    return serial


def check_ca(certificate: x509.Certificate, key: SigningKey, now: datetime, *, source: str) -> None:
    """Refuse CA material that cannot sign leaves and CRLs today, naming ``source``."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CAError(
            f"{source} is not a CA certificate (BasicConstraints CA:true missing); "
            "supply the CA certificate, not a leaf."
        )
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.key_cert_sign or not usage.crl_sign:
        raise CAError(
            f"{source} lacks the keyCertSign and cRLSign key usages; re-issue the CA "
            "certificate with both."
        )
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        raise CAError(
            f"{source} is valid only from {certificate.not_valid_before_utc.isoformat()} to "
            f"{certificate.not_valid_after_utc.isoformat()}, not at {now.isoformat()}; "
            "supply a currently valid CA certificate."
        )
    if not key_matches_certificate(key, certificate):
        raise CAError(
            f"{source} does not match its private key; supply the key the certificate "
            "was issued for."
        )


def random_serial() -> int:
    """A fresh serial; zero (odds 2^-159) is not a valid serial, so it becomes one."""
    return secrets.randbits(SERIAL_BITS) or 1


def self_signed_root(
    key: SigningKey,
    common_name: str,
    now: datetime,
    lifetime: timedelta,
    *,
    path_length: int | None = 0,
) -> x509.Certificate:
    """A root for ``lifetime`` from about ``now``; path length 0 (the local CA's own root)
    signs leaves only, a larger one lets sub-CAs sit below it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = _window(now, lifetime)
    builder = _ca_builder(name, name, key.public_key(), start, end, path_length=path_length)
    return builder.sign(key, signature_hash(key))


def _window(now: datetime, lifetime: timedelta) -> tuple[datetime, datetime]:
    """Validity bounds in whole seconds, the precision X.509 encodes."""
    backdate = min(BACKDATE, timedelta(seconds=lifetime // timedelta(seconds=10)))
    start = now.replace(microsecond=0) - backdate
    return start, (start + lifetime).replace(microsecond=0)


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    not_before: datetime,
    not_after: datetime,
    *,
    path_length: int | None,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder(
            issuer_name=issuer,
            subject_name=subject,
            public_key=public_key,
            serial_number=random_serial(),
            not_valid_before=not_before,
            not_valid_after=not_after,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier(key_identifier(subject_public_key_info(public_key))),
            critical=False,
        )
    )


@functools.lru_cache(maxsize=64)
def _leaf_extensions(key_encipherment: bool, usages: tuple[ExtendedKeyUsage, ...]) -> bytes:
    """BasicConstraints, KeyUsage and EKU, which depend only on the key type and usages.

    digitalSignature always; keyEncipherment only for RSA keys used in TLS (RSA key
    transport): EC and EdDSA keys cannot encipher, so asserting it for them is wrong.
    """
    leaf = x509.BasicConstraints(ca=False, path_length=None)
    key_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    extended = x509.ExtendedKeyUsage([eku_oid(usage) for usage in usages])
    return b"".join(
        der.encode_extension(x509.Extension(value.oid, critical, value))
        for value, critical in ((leaf, True), (key_usage, True), (extended, False))
    )


def _signature_algorithm(key: SigningKey, digest: SignatureHash) -> bytes:
    """The AlgorithmIdentifier ``key`` signs under, taken from a certificate the library
    signed with it, so ours always names what ``signer`` does."""
    name = x509.Name([])
    sample = x509.CertificateBuilder(
        issuer_name=name,
        subject_name=name,
        public_key=key.public_key(),
        serial_number=1,
        not_valid_before=datetime(2000, 1, 1),
        not_valid_after=datetime(2000, 1, 2),
    ).sign(key, digest)
    # Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    return der.children(sample.public_bytes(serialization.Encoding.DER))[1]


def _distribution_points(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


@dataclass(frozen=True, slots=True)
class Leaf:
    """A signed leaf: its DER plus the values the CA chose, so nobody parses it back."""

    der: bytes
    serial: int
    not_before: datetime
    not_after: datetime

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def pem(self) -> bytes:
        return pem_encode("CERTIFICATE", self.der)

    @property
    def fingerprint_sha256(self) -> str:
        return fingerprint_sha256(self.der)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A checked CA certificate with its key, and the certificates above it (may be empty)."""

    certificate: x509.Certificate
    key: SigningKey
    chain: tuple[x509.Certificate, ...] = ()
    # Where relying parties fetch this CA's CRL; every leaf names it when set.
    crl_url: str | None = None
    key_id: bytes = field(init=False, repr=False)
    chain_pem: bytes = field(init=False, repr=False)
    authority_key_identifier: x509.AuthorityKeyIdentifier = field(init=False, repr=False)
    # Encoded once: the extensions every leaf of this CA carries (AKI, CRL URL), the
    # issuer name as the CA certificate spells it, and the signature AlgorithmIdentifier.
    _shared: bytes = field(init=False, repr=False)
    _issuer: bytes = field(init=False, repr=False)
    _algorithm: bytes = field(init=False, repr=False)
    _hash: SignatureHash = field(init=False, repr=False)
    _sign: Callable[[bytes], bytes] = field(init=False, repr=False)
    # The CA certificate's validity; its properties build new datetimes on every read.
    _bounds: tuple[datetime, datetime] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Leaves point at the CA's own SKI when it has one: path builders match the two.
        try:
            key_id = self.certificate.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value.digest
        except x509.ExtensionNotFound:
            key_id = key_identifier(subject_public_key_info(self.certificate.public_key()))
        authority = x509.AuthorityKeyIdentifier(
            key_identifier=key_id, authority_cert_issuer=None, authority_cert_serial_number=None
        )
        shared: list[x509.Extension[x509.ExtensionType]] = [
            x509.Extension(authority.oid, False, authority)
        ]
        if self.crl_url is not None:
            points = _distribution_points(self.crl_url)
            shared.append(x509.Extension(points.oid, False, points))
        digest = signature_hash(self.key)
        # TBSCertificate: [version], serial, signature, issuer, validity, subject, ...
        tbs = der.children(self.certificate.tbs_certificate_bytes)
        subject = tbs[5] if tbs[0][0] == 0xA0 else tbs[4]
        object.__setattr__(self, "key_id", key_id)
        object.__setattr__(self, "chain_pem", certificates_pem((self.certificate, *self.chain)))
        object.__setattr__(self, "authority_key_identifier", authority)
        object.__setattr__(self, "_shared", b"".join(der.encode_extension(e) for e in shared))
        object.__setattr__(self, "_issuer", subject)
        object.__setattr__(self, "_algorithm", _signature_algorithm(self.key, digest))
        object.__setattr__(self, "_hash", digest)
        object.__setattr__(self, "_sign", signer(self.key))
        object.__setattr__(
            self,
            "_bounds",
            (self.certificate.not_valid_before_utc, self.certificate.not_valid_after_utc),
        )

    @classmethod
    def load(
        cls,
        certificate: x509.Certificate,
        key: SigningKey,
        chain: tuple[x509.Certificate, ...],
        now: datetime,
        *,
        source: str,
        crl_url: str | None = None,
    ) -> CertificateAuthority:
        """Check the material first; leaves get ``chain`` after them, so it must be in order."""
        check_ca(certificate, key, now, source=source)
        for position, (child, parent) in enumerate(zip((certificate, *chain), chain, strict=False)):
            try:
                child.verify_directly_issued_by(parent)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise CAError(
                    f"{source}: certificate {position + 2} did not issue certificate "
                    f"{position + 1}; list the CA certificate first, then each issuer above it."
                ) from exc
        return cls(certificate, key, chain, crl_url)

    def issue(self, public_key: CertificatePublicKeyTypes, grant: Grant, now: datetime) -> Leaf:
        """A leaf for ``grant``, valid for its lifetime and never beyond this CA.

        The TBSCertificate is assembled from parts encoded at load or by ``cryptography``
        (names, SANs, the key) rather than by ``CertificateBuilder``: see ``der`` for why
        and for the test that holds the two to the same bytes.
        """
        not_before, not_after = self._validity(now, grant.lifetime)
        serial = random_serial()
        spki = subject_public_key_info(public_key)
        subject = (
            _EMPTY_NAME
            if grant.common_name is None
            else x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, grant.common_name)]
            ).public_bytes()
        )
        names = x509.SubjectAlternativeName(grant.sans.general_names()).public_bytes()
        extensions = b"".join(
            (
                _leaf_extensions(
                    grant.key.algorithm is KeyAlgorithm.RSA
                    and not _TLS_USAGES.isdisjoint(grant.extended_key_usages),
                    grant.extended_key_usages,
                ),
                der.extension(_SAN_PREFIX[grant.common_name is None], names),
                der.extension(_SKI_PREFIX, der.tlv(der.OCTET_STRING, key_identifier(spki))),
                self._shared,
                _MUST_STAPLE if grant.must_staple else b"",
            )
        )
        tbs = der.tlv(
            der.SEQUENCE,
            b"".join(
                (
                    _VERSION_3,
                    der.integer(serial),
                    self._algorithm,
                    self._issuer,
                    der.tlv(der.SEQUENCE, der.time(not_before) + der.time(not_after)),
                    subject,
                    spki,
                    der.explicit(3, der.tlv(der.SEQUENCE, extensions)),
                )
            ),
        )
        signature = der.tlv(der.BIT_STRING, b"\0" + self._sign(tbs))
        return Leaf(
            der.tlv(der.SEQUENCE, tbs + self._algorithm + signature), serial, not_before, not_after
        )

    def issue_ca(
        self,
        public_key: CertificatePublicKeyTypes,
        common_name: str,
        now: datetime,
        lifetime: timedelta,
    ) -> x509.Certificate:
        """A sub-CA below this one that signs leaves directly (path length 0)."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        not_before, not_after = self._validity(now, lifetime)
        return (
            _ca_builder(
                name, self.certificate.subject, public_key, not_before, not_after, path_length=0
            )
            .add_extension(self.authority_key_identifier, critical=False)
            .sign(self.key, self._hash)
        )

    def _validity(self, now: datetime, lifetime: timedelta) -> tuple[datetime, datetime]:
        starts, expires = self._bounds
        if now >= expires:
            raise CAError(
                f"CA certificate {self.certificate.subject.rfc4514_string()} expired at "
                f"{expires.isoformat()}; renew the CA before issuing."
            )
        start, end = _window(now, lifetime)
        return max(start, starts), min(end, expires)
