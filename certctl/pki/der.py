"""The DER the local CA writes itself: the frame of a leaf certificate around library parts.

Issuing through ``x509.CertificateBuilder`` costs about 70 µs beyond the signature itself
(converting extension objects, then parsing the signed result back), which alone kept
issuance under half the rate its two ECDSA operations allow. So the CA assembles the
TBSCertificate from pieces: names, SANs, extension values and public keys still come from
``cryptography``'s encoders; this module supplies only the framing (lengths, integers,
times, OIDs, the extension wrapper). ``tests/property/test_pki_der.py`` checks the result
byte for byte against ``CertificateBuilder`` for generated grants, so the library stays
the reference for every certificate we sign.

Reading is limited to walking DER that ``cryptography`` produced (key identifiers, the
signature algorithm of a certificate the library signed); outside input is never parsed
here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509

INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OBJECT_IDENTIFIER = 0x06
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
# BOOLEAN TRUE as DER writes it; FALSE is never written for DEFAULT FALSE fields.
TRUE = b"\x01\x01\xff"


def length(size: int) -> bytes:
    """A definite length octet string: short form below 128, else the fewest octets."""
    if size < 0x80:
        return bytes((size,))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    return bytes((tag,)) + length(size) + content


def explicit(number: int, content: bytes) -> bytes:
    """A context-specific constructed tag ``[number] EXPLICIT`` around one element."""
    return tlv(0xA0 | number, content)


def integer(value: int) -> bytes:
    """A non-negative INTEGER: two's complement needs a leading zero when the top bit is set."""
    if value < 0:
        raise ValueError(f"integer {value} is negative; only serials and versions are written.")
    return tlv(INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def object_identifier(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(arc) for arc in oid.dotted_string.split(".")]
    body = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        while arc := arc >> 7:
            chunk.append(0x80 | arc & 0x7F)
        body.extend(reversed(chunk))
    return tlv(OBJECT_IDENTIFIER, bytes(body))


def time(moment: datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime for 1950-2049, GeneralizedTime otherwise, whole seconds.

    A naive ``moment`` is taken as UTC, as ``CertificateBuilder`` takes it.
    """
    if moment.tzinfo is not None and moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    clock = f"{moment.month:02d}{moment.day:02d}{moment.hour:02d}{moment.minute:02d}"
    clock += f"{moment.second:02d}Z"
    if 1950 <= moment.year < 2050:
        return tlv(UTC_TIME, f"{moment.year % 100:02d}{clock}".encode())
    return tlv(GENERALIZED_TIME, f"{moment.year:04d}{clock}".encode())


def extension_prefix(oid: x509.ObjectIdentifier, critical: bool) -> bytes:
    """Everything of an Extension before its OCTET STRING value, kept for reuse per OID."""
    return object_identifier(oid) + (TRUE if critical else b"")


def extension(prefix: bytes, value: bytes) -> bytes:
    """Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }."""
    return tlv(SEQUENCE, prefix + tlv(OCTET_STRING, value))


def encode_extension(ext: x509.Extension[x509.ExtensionType]) -> bytes:
    """A whole Extension, its value encoded by ``cryptography``."""
    return extension(extension_prefix(ext.oid, ext.critical), ext.value.public_bytes())


def children(der: bytes) -> list[bytes]:
    """The elements (tag, length and content) inside the constructed element ``der``."""
    content_start, end = _bounds(der, 0)
    elements = []
    offset = content_start
    while offset < end:
        _, stop = _bounds(der, offset)
        elements.append(der[offset:stop])
        offset = stop
    return elements


def content(der: bytes) -> bytes:
    """The content octets of the element ``der``."""
    start, stop = _bounds(der, 0)
    return der[start:stop]


def _bounds(der: bytes, offset: int) -> tuple[int, int]:
    """Where the content of the element at ``offset`` starts and where the element ends."""
    first = der[offset + 1]
    if first < 0x80:
        return offset + 2, offset + 2 + first
    count = first & 0x7F
    start = offset + 2 + count
    return start, start + int.from_bytes(der[offset + 2 : start], "big")
