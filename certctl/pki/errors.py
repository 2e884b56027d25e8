"""Typed PKI errors: callers catch ``PKIError`` and never a ``cryptography`` exception."""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.exceptions import InternalError, UnsupportedAlgorithm

from certctl.core.errors import CertctlError

# cryptography only warns about some violations in parsed input (a non-positive serial, an
# over-long common name) and says it will reject them in a future release. For outside
# input we want that future now, so warnings raised while this package parses are errors
# that ``PARSE_ERRORS`` catches, whatever the process's other warning filters say.
warnings.filterwarnings("error", module=r"certctl\.pki\.")

# Everything cryptography raises when the bytes it parses are malformed or unsupported
# (found by tests/property/test_pki_fuzz.py): KeyError comes from a name attribute whose
# ASN.1 string type cryptography does not know, InternalError from OpenSSL refusing a
# damaged Ed25519 key.
PARSE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    InternalError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    Warning,
)


class PKIError(CertctlError, ValueError):
    """Base class: outside input that is not usable key or certificate material."""


class PEMError(PKIError):
    """PEM text that is truncated, of the wrong block type, or does not decode."""


class CSRError(PKIError):
    """A certificate signing request that does not parse or whose signature is wrong."""


class CAError(PKIError):
    """CA certificate or key material that cannot sign (not a CA, expired, key mismatch)."""


class ChainError(PKIError):
    """A certificate that does not validate under the given chain and trust anchors."""


class SealError(PKIError):
    """A sealed secret that cannot be opened: wrong passphrase, tampering, unknown format."""


class ProfileError(PKIError):
    """A certificate profile nothing can be issued under; ``field`` names the field to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
