"""The staged-material check refuses bad material before any file is touched."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from certctl.deploy import File, FileRole, ValidateFailed
from certctl.deploy.material import check_material
from certctl.testing.material import ScratchCA

ISSUER = ScratchCA()
OTHER_CA = ScratchCA("other")
GOOD = ISSUER.issue("good.example")
NEXT = ISSUER.issue("next.example")
NOW = ISSUER.now


def test_a_consistent_set_passes_and_yields_the_leaf() -> None:
    files = [
        File("/t/cert.pem", GOOD.cert_pem, FileRole.CERT),
        File("/t/chain.pem", GOOD.chain_pem, FileRole.CHAIN),
        File("/t/fullchain.pem", GOOD.fullchain, FileRole.FULLCHAIN),
        File("/t/key.pem", GOOD.key_pem, FileRole.KEY),
        File("/t/site.pem", GOOD.combined, FileRole.COMBINED),
        File("/t/notes.txt", b"not pem at all", FileRole.OTHER),
    ]
    assert check_material(files, NOW) == GOOD.leaf()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            [
                File("/t/cert.pem", GOOD.cert_pem, FileRole.CERT),
                File("/t/key.pem", NEXT.key_pem, FileRole.KEY),
            ],
            "/t/key.pem holds a private key that does not match the certificate in /t/cert.pem",
        ),
        (
            [File("/t/site.pem", GOOD.fullchain + NEXT.key_pem, FileRole.COMBINED)],
            "does not match",
        ),
        (
            [
                File("/t/cert.pem", GOOD.cert_pem, FileRole.CERT),
                File("/t/fullchain.pem", NEXT.fullchain, FileRole.FULLCHAIN),
            ],
            "hold different leaf certificates",
        ),
        (
            [File("/t/fullchain.pem", GOOD.chain_pem + GOOD.cert_pem, FileRole.FULLCHAIN)],
            "is not followed by its issuer",
        ),
        (
            [
                File("/t/cert.pem", GOOD.cert_pem, FileRole.CERT),
                File("/t/chain.pem", OTHER_CA.issue("x").chain_pem, FileRole.CHAIN),
            ],
            "/t/chain.pem: 'CN=good.example' is not followed by its issuer",
        ),
        ([File("/t/cert.pem", GOOD.fullchain, FileRole.CERT)], "holds 2 certificates"),
        (
            [File("/t/cert.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n", FileRole.CERT)],
            "not usable",
        ),
        ([File("/t/key.pem", GOOD.cert_pem, FileRole.KEY)], "/t/key.pem \\(key\\) is not usable"),
    ],
)
def test_bad_material_is_refused_naming_the_file(files: list[File], message: str) -> None:
    with pytest.raises(ValidateFailed, match=message):
        check_material(files, NOW)


def test_an_expired_certificate_is_refused() -> None:
    expired = ISSUER.issue("old.example", expired=True)
    with pytest.raises(ValidateFailed, match="expired at"):
        check_material([File("/t/cert.pem", expired.cert_pem, FileRole.CERT)], NOW)
    with pytest.raises(ValidateFailed, match="expired at"):
        check_material(
            [File("/t/cert.pem", GOOD.cert_pem, FileRole.CERT)], NOW + timedelta(days=31)
        )


def test_a_chain_alone_is_still_checked_for_order() -> None:
    intermediate, root = (
        c.public_bytes(serialization.Encoding.PEM) for c in (ISSUER.intermediate, ISSUER.root)
    )
    assert check_material([File("/t/chain.pem", intermediate + root, FileRole.CHAIN)], NOW) is None
    with pytest.raises(ValidateFailed, match="is not followed by its issuer"):
        check_material([File("/t/chain.pem", root + intermediate, FileRole.CHAIN)], NOW)
