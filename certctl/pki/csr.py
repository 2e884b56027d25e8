"""Certificate signing requests: built by agents, parsed and checked by the CA.

Parsing decodes everything the CA will look at (signature, key, subject, requested
extensions) up front, so a damaged CSR fails here with a ``CSRError`` and the code after
it works on plain values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from certctl.pki.errors import PARSE_ERRORS, CSRError
from certctl.pki.keys import SigningKey, signature_hash
from certctl.pki.names import NO_NAMES, SubjectAltNames, from_general_names
from certctl.pki.pem import no_block_error, pem_blocks

# The ECDSA signature algorithms, built once: making one per request is a measurable part
# of checking a CSR.
_ECDSA = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """What a CSR asks for, after its signature has been checked."""

    public_key: CertificatePublicKeyTypes
    common_name: str | None
    sans: SubjectAltNames
    # SAN entries of kinds we never issue (otherName, directoryName, ...), described.
    unsupported_names: tuple[str, ...]
    # None when the CSR does not ask for particular extended key usages.
    extended_key_usages: tuple[x509.ObjectIdentifier, ...] | None


def build_csr(
    key: SigningKey,
    *,
    common_name: str | None = None,
    sans: SubjectAltNames = NO_NAMES,
    extended_key_usages: Sequence[x509.ObjectIdentifier] = (),
) -> bytes:
    """A PEM CSR signed by ``key``; agents send this and keep the key."""
    subject = [] if common_name is None else [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sans.general_names()), critical=False
        )
    if extended_key_usages:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(extended_key_usages)), critical=False
        )
    return builder.sign(key, signature_hash(key)).public_bytes(serialization.Encoding.PEM)


def load_csr(data: bytes) -> CertificateRequest:
    """The request in the first PEM CERTIFICATE REQUEST block, signature verified."""
    blocks = pem_blocks(data, "CERTIFICATE REQUEST")
    if not blocks:
        raise no_block_error(data, "CERTIFICATE REQUEST")
    try:
        csr = x509.load_pem_x509_csr(blocks[0])
        public_key = csr.public_key()
        valid = _signature_valid(csr, public_key)
        # Only X500UniqueIdentifier attributes hold bytes; cryptography refuses a bit-string CN.
        common_names = [
            cast(str, attribute.value)
            for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
        requested_names, usages = _requested(csr)
        sans, unsupported = from_general_names(requested_names or ())
    except PARSE_ERRORS as exc:
        raise CSRError(
            f"CSR does not parse ({exc}); send the PEM CSR exactly as the key holder made it."
        ) from exc
    if not valid:
        raise CSRError(
            "CSR signature does not verify against its public key; "
            "re-create the CSR with the private key it names."
        )
    if len(common_names) > 1:
        raise CSRError(
            f"CSR subject has {len(common_names)} common names; put one in the subject "
            "and the others in subjectAltName."
        )
    return CertificateRequest(
        public_key=public_key,
        common_name=common_names[0] if common_names else None,
        sans=sans,
        unsupported_names=unsupported,
        extended_key_usages=None if usages is None else tuple(usages),
    )


def _signature_valid(
    csr: x509.CertificateSigningRequest, public_key: CertificatePublicKeyTypes
) -> bool:
    """ECDSA requests (the agents' default) are checked with the key already loaded:
    ``is_signature_valid`` loads it again, some 25 µs per request here. Every
    other pairing of key and algorithm is left to ``is_signature_valid``, which also
    refuses a signature algorithm that does not fit the key."""
    algorithm = _ECDSA.get(csr.signature_algorithm_oid)
    if algorithm is not None and isinstance(public_key, ec.EllipticCurvePublicKey):
        try:
            public_key.verify(csr.signature, csr.tbs_certrequest_bytes, algorithm)
        except InvalidSignature:
            return False
        return True
    return csr.is_signature_valid


def _requested(
    csr: x509.CertificateSigningRequest,
) -> tuple[x509.SubjectAlternativeName | None, x509.ExtendedKeyUsage | None]:
    """The names and usages the CSR asks for, in one pass over its extensions."""
    names = usages = None
    for extension in csr.extensions:
        value = extension.value
        if isinstance(value, x509.SubjectAlternativeName):
            names = value
        elif isinstance(value, x509.ExtendedKeyUsage):
            usages = value
    return names, usages
