"""Secrets at rest: AES-256-GCM under a key derived from an operator passphrase.

Blob format, version 1::

    0x01 | salt (16) | nonce (12) | ciphertext + tag (16)

The key is scrypt(passphrase, salt, N=2^15, r=8, p=3), one of OWASP's recommended
settings (32 MiB, about a third of a second), so a stolen database or data dir does not
give up a weak passphrase to a GPU farm. The version byte and salt are authenticated
together with the caller's ``aad``, which names the blob's owner (a row id, a file's
purpose): a blob copied onto another row, or a header edited to downgrade the format,
fails to open.

Derivation is slow on purpose, so derived keys are cached per (passphrase, salt), and
sealing in one process reuses one salt per passphrase: every blob still has its own
random 96-bit nonce, and one key stays far below GCM's 2^32-messages-per-key bound.
"""

from __future__ import annotations

import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from certctl.pki.errors import SealError

VERSION = 1
_SALT = 16
_NONCE = 12
_TAG = 16
_HEADER = 1 + _SALT
_SCRYPT_N = 1 << 15
_SCRYPT_R = 8
_SCRYPT_P = 3


def seal(plaintext: bytes, passphrase: str, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` for the owner named by ``aad``."""
    key = _encode(passphrase)
    salt = _process_salt(key)
    header = bytes([VERSION]) + salt
    nonce = os.urandom(_NONCE)
    sealed = _cipher(key, salt).encrypt(nonce, plaintext, header + aad)
    return header + nonce + sealed


def unseal(blob: bytes, passphrase: str, aad: bytes) -> bytes:
    """The plaintext of a blob sealed for ``aad`` with the same passphrase."""
    key = _encode(passphrase)
    if len(blob) < _HEADER + _NONCE + _TAG:
        raise SealError(
            f"sealed blob is {len(blob)} bytes, shorter than any sealed value; "
            "restore the stored value, it was truncated."
        )
    if blob[0] != VERSION:
        raise SealError(
            f"sealed blob has format version {blob[0]}, this build reads version {VERSION}; "
            "upgrade certctl or restore the stored value."
        )
    header, nonce, sealed = (
        blob[:_HEADER],
        blob[_HEADER : _HEADER + _NONCE],
        blob[_HEADER + _NONCE :],
    )
    try:
        return _cipher(key, header[1:]).decrypt(nonce, sealed, header + aad)
    except InvalidTag:
        raise SealError(
            "sealed blob does not authenticate: the passphrase (CERTCTL_CONFIG_ENCRYPTION_KEY) "
            "differs from the one that sealed it, or the blob was altered or moved to another "
            "owner; set the original passphrase or restore the stored value."
        ) from None


def _encode(passphrase: str) -> bytes:
    if not passphrase:
        raise SealError(
            "passphrase is empty; set CERTCTL_CONFIG_ENCRYPTION_KEY to seal or unseal secrets."
        )
    return passphrase.encode()


@functools.lru_cache(maxsize=8)
def _process_salt(passphrase: bytes) -> bytes:
    return os.urandom(_SALT)


@functools.lru_cache(maxsize=256)
def _cipher(passphrase: bytes, salt: bytes) -> AESGCM:
    kdf = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return AESGCM(kdf.derive(passphrase))
