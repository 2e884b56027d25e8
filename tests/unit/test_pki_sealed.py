"""Sealed secrets: round trip, owner binding, tampering, versions, passphrases."""

from __future__ import annotations

import pytest

from certctl.pki.errors import SealError
from certctl.pki.sealed import VERSION, seal, unseal

PASSPHRASE = "correct horse battery staple, but longer than 32 bytes"
AAD = b"issuers/iss-local/encrypted_config"
SECRET = b'{"api_token": "s3cr3t"}'
BLOB = seal(SECRET, PASSPHRASE, AAD)
# version | salt(16) | nonce(12) | ciphertext | tag(16)
SALT, NONCE, BODY, TAG = slice(1, 17), slice(17, 29), slice(29, -16), slice(-16, None)


def test_round_trip_and_layout() -> None:
    assert unseal(BLOB, PASSPHRASE, AAD) == SECRET
    assert BLOB[0] == VERSION == 1
    assert len(BLOB) == 1 + 16 + 12 + len(SECRET) + 16
    assert SECRET not in BLOB
    assert unseal(seal(b"", PASSPHRASE, b""), PASSPHRASE, b"") == b""


def test_each_seal_has_a_fresh_nonce() -> None:
    again = seal(SECRET, PASSPHRASE, AAD)
    assert again[NONCE] != BLOB[NONCE]
    assert again[BODY] != BLOB[BODY]
    assert unseal(again, PASSPHRASE, AAD) == SECRET


AUTHENTICATION = "does not authenticate"


@pytest.mark.parametrize(
    ("passphrase", "aad"),
    [
        (PASSPHRASE + "!", AAD),
        (PASSPHRASE, b"issuers/iss-other/encrypted_config"),
        (PASSPHRASE, b""),
    ],
    ids=["wrong-passphrase", "other-owner", "no-owner"],
)
def test_wrong_passphrase_or_owner_fails_to_open(passphrase: str, aad: bytes) -> None:
    with pytest.raises(SealError, match=AUTHENTICATION):
        unseal(BLOB, passphrase, aad)


@pytest.mark.parametrize("region", [SALT, NONCE, BODY, TAG], ids=["salt", "nonce", "body", "tag"])
def test_flipping_a_bit_anywhere_after_the_version_fails_to_open(region: slice) -> None:
    tampered = bytearray(BLOB)
    tampered[region.start] ^= 0x01
    with pytest.raises(SealError, match=AUTHENTICATION):
        unseal(bytes(tampered), PASSPHRASE, AAD)


def test_unknown_version_is_named() -> None:
    with pytest.raises(SealError, match="format version 2, this build reads version 1"):
        unseal(b"\x02" + BLOB[1:], PASSPHRASE, AAD)


@pytest.mark.parametrize("length", [0, 1, 28, 44])
def test_truncated_blobs_are_refused(length: int) -> None:
    with pytest.raises(SealError, match="was truncated"):
        unseal(BLOB[:length], PASSPHRASE, AAD)


def test_empty_passphrase_is_refused_both_ways() -> None:
    with pytest.raises(SealError, match="set CERTCTL_CONFIG_ENCRYPTION_KEY"):
        seal(SECRET, "", AAD)
    with pytest.raises(SealError, match="set CERTCTL_CONFIG_ENCRYPTION_KEY"):
        unseal(BLOB, "", AAD)
