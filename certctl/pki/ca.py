"""Certificate authorities: checking CA material, making roots and sub-CAs, signing grants.

A ``CertificateAuthority`` is loaded once and reused for every signature: the key
identifier, extension objects and chain PEM are computed at load, so issuing a leaf does
only the work that differs per certificate (see ``docs/performance.md``).
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from certctl.core.model import ExtendedKeyUsage, KeyAlgorithm
from certctl.pki.errors import CAError, PKIError
from certctl.pki.keys import (
    SignatureHash,
    SigningKey,
    key_identifier,
    signature_hash,
)
from certctl.pki.pem import certificates_pem, key_matches_certificate
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
_Extension = x509.Extension[x509.ExtensionType]
_STATUS_REQUEST = x509.TLSFeature([x509.TLSFeatureType.status_request])
_MUST_STAPLE: _Extension = x509.Extension(_STATUS_REQUEST.oid, False, _STATUS_REQUEST)


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
        .add_extension(x509.SubjectKeyIdentifier(key_identifier(public_key)), critical=False)
    )


@functools.lru_cache(maxsize=64)
def _leaf_extensions(
    key_encipherment: bool, usages: tuple[ExtendedKeyUsage, ...]
) -> tuple[_Extension, ...]:
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
    return (
        x509.Extension(leaf.oid, True, leaf),
        x509.Extension(key_usage.oid, True, key_usage),
        x509.Extension(extended.oid, False, extended),
    )


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
    _shared: tuple[_Extension, ...] = field(init=False, repr=False)
    _hash: SignatureHash = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Leaves point at the CA's own SKI when it has one: path builders match the two.
        try:
            key_id = self.certificate.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value.digest
        except x509.ExtensionNotFound:
            key_id = key_identifier(self.certificate.public_key())
        authority = x509.AuthorityKeyIdentifier(
            key_identifier=key_id, authority_cert_issuer=None, authority_cert_serial_number=None
        )
        shared: list[_Extension] = [x509.Extension(authority.oid, False, authority)]
        if self.crl_url is not None:
            points = _distribution_points(self.crl_url)
            shared.append(x509.Extension(points.oid, False, points))
        object.__setattr__(self, "key_id", key_id)
        object.__setattr__(self, "chain_pem", certificates_pem((self.certificate, *self.chain)))
        object.__setattr__(self, "authority_key_identifier", authority)
        object.__setattr__(self, "_shared", tuple(shared))
        object.__setattr__(self, "_hash", signature_hash(self.key))

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

    def issue(
        self, public_key: CertificatePublicKeyTypes, grant: Grant, now: datetime
    ) -> x509.Certificate:
        """A leaf for ``grant``, valid for its lifetime and never beyond this CA.

        The extension list goes to the builder whole, and the parts that depend only on
        the CA or the usages are built once: chaining ``add_extension`` copies the builder
        on every call (``benchmarks/pki.py`` shows where an issuance spends its time).
        """
        not_before, not_after = self._validity(now, grant.lifetime)
        subject = (
            []
            if grant.common_name is None
            else [x509.NameAttribute(NameOID.COMMON_NAME, grant.common_name)]
        )
        names = x509.SubjectAlternativeName(grant.sans.general_names())
        key_id = x509.SubjectKeyIdentifier(key_identifier(public_key))
        extensions = [
            *_leaf_extensions(
                grant.key.algorithm is KeyAlgorithm.RSA
                and not _TLS_USAGES.isdisjoint(grant.extended_key_usages),
                grant.extended_key_usages,
            ),
            # RFC 5280 4.2.1.6: with an empty subject the SAN carries the identity and
            # must be critical.
            x509.Extension(names.oid, grant.common_name is None, names),
            x509.Extension(key_id.oid, False, key_id),
            *self._shared,
        ]
        if grant.must_staple:
            extensions.append(_MUST_STAPLE)
        return x509.CertificateBuilder(
            issuer_name=self.certificate.subject,
            subject_name=x509.Name(subject),
            public_key=public_key,
            serial_number=random_serial(),
            not_valid_before=not_before,
            not_valid_after=not_after,
            extensions=extensions,
        ).sign(self.key, self._hash)

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
        expires = self.certificate.not_valid_after_utc
        if now >= expires:
            raise CAError(
                f"CA certificate {self.certificate.subject.rfc4514_string()} expired at "
                f"{expires.isoformat()}; renew the CA before issuing."
            )
        start, end = _window(now, lifetime)
        return max(start, self.certificate.not_valid_before_utc), min(end, expires)
