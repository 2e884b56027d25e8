"""The local CA issuer: a self-signed root or an operator's sub-CA, kept in a data dir.

Self-signed mode makes an ECDSA P-256 root on first start and keeps it (the key sealed
with the configuration passphrase) in the data dir, unless ``import_ca`` put an
operator's CA there first (``certctl issuer import-ca``, on the server host: CA keys never
travel through the API): the earlier implementation made a new
root in memory on every start, so every certificate issued before a restart stopped
chaining to the root that clients had been told to trust. Sub-CA mode loads the
operator's CA certificate (optionally followed by the certificates above it) and key, and
refuses to start unless they can sign today.

Data dir layout (one directory per issuer; files 0600, written atomically)::

    ca.pem            the CA certificate, then any issuers above it (self-signed or imported)
    ca-key.sealed     its private key, sealed for this certificate (see pki.sealed)
    revocations.json  revoked serials and the last CRL number
    .lock             flock target: server worker processes share the directory

Methods block (file I/O, CPU-bound signing); trio callers use ``trio.to_thread``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certctl.connectors.issuers import IssuedCertificate
from certctl.core.model import CertificateProfile, RevocationReason
from certctl.deploy import write_atomic
from certctl.pki.ca import CertificateAuthority, format_serial, parse_serial, self_signed_root
from certctl.pki.crl import RevokedSerial, build_crl
from certctl.pki.csr import load_csr
from certctl.pki.errors import PKIError
from certctl.pki.keys import ECDSA_P256, SigningKey, generate_key, private_key_pem
from certctl.pki.names import NO_NAMES, SubjectAltNames
from certctl.pki.pem import (
    MAX_PEM_BYTES,
    fingerprint_sha256,
    load_certificates,
    load_private_key,
)
from certctl.pki.profile import DEFAULT_VALIDITY, Profile, enforce
from certctl.pki.sealed import seal, unseal

ROOT_CERT = "ca.pem"
ROOT_KEY = "ca-key.sealed"
STATE = "revocations.json"
LOCK = ".lock"
_STATE_FORMAT = 1

_T = TypeVar("_T")


class LocalCAError(PKIError):
    """Local CA configuration or data dir contents that cannot be used."""


@dataclass(frozen=True, slots=True)
class LocalCAConfig:
    data_dir: Path
    # Seals the self-signed root's key (CERTCTL_CONFIG_ENCRYPTION_KEY); unused in sub-CA mode.
    passphrase: str | None = None
    ca_cert_path: Path | None = None
    ca_key_path: Path | None = None
    common_name: str = "certctl Local CA"
    root_lifetime: timedelta = timedelta(days=3650)
    crl_url: str | None = None
    crl_lifetime: timedelta = timedelta(hours=24)
    # How long a leaf lives when the request names no TTL (capped by max_ttl_seconds).
    leaf_validity: timedelta = DEFAULT_VALIDITY


@dataclass(frozen=True, slots=True)
class _State:
    crl_number: int
    revocations: tuple[RevokedSerial, ...]


class LocalCA:
    """Issues, revokes and publishes CRLs for one CA; open it with ``LocalCA.open``."""

    def __init__(self, authority: CertificateAuthority, config: LocalCAConfig) -> None:
        self.authority = authority
        self.config = config
        self._state_path = config.data_dir / STATE
        self._lock_path = config.data_dir / LOCK

    @classmethod
    def open(cls, config: LocalCAConfig, now: datetime) -> LocalCA:
        """Load (or, self-signed and first start, create) the CA and check its data dir."""
        if (config.ca_cert_path is None) != (config.ca_key_path is None):
            raise LocalCAError(
                "ca_cert_path and ca_key_path must be set together; set both for sub-CA "
                "mode or neither for a self-signed root."
            )
        if config.crl_url is not None and not config.crl_url.startswith(("http://", "https://")):
            raise LocalCAError(
                f"crl_url {config.crl_url!r} is not an http(s) URL; give the URL clients "
                "fetch the CRL from."
            )
        if config.leaf_validity < timedelta(seconds=1):
            raise LocalCAError(
                f"leaf_validity {config.leaf_validity} is under a second; set it to days."
            )
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(config.data_dir / LOCK):
            if config.ca_cert_path is not None and config.ca_key_path is not None:
                authority = _sub_ca(config.ca_cert_path, config.ca_key_path, config.crl_url, now)
            else:
                authority = _root(config, now)
            ca = cls(authority, config)
            ca._read_state()
        return ca

    def issue(
        self,
        csr_pem: bytes,
        profile: CertificateProfile | Profile,
        now: datetime,
        *,
        ttl: timedelta | None = None,
        extra_sans: SubjectAltNames = NO_NAMES,
    ) -> IssuedCertificate:
        """Verify the CSR, enforce ``profile`` on it, and sign a leaf.

        Without a ``ttl`` the leaf lives for ``config.leaf_validity``, capped by the
        profile's ``max_ttl_seconds``.
        """
        request = load_csr(csr_pem)
        grant = enforce(
            request, profile, ttl=ttl, extra_sans=extra_sans, validity=self.config.leaf_validity
        )
        leaf = self.authority.issue(request.public_key, grant, now)
        return IssuedCertificate(
            certificate_pem=leaf.pem,
            chain_pem=self.authority.chain_pem,
            serial=format_serial(leaf.serial),
            fingerprint_sha256=leaf.fingerprint_sha256,
            not_before=leaf.not_before,
            not_after=leaf.not_after,
        )

    def revoke(self, serial: str, reason: RevocationReason, now: datetime) -> RevokedSerial:
        """Record a revocation for the next CRL; revoking twice keeps the first record."""
        number = parse_serial(serial)
        with _locked(self._lock_path):
            state = self._read_state()
            for existing in state.revocations:
                if existing.serial == number:
                    return existing
            revocation = RevokedSerial(serial=number, reason=reason, revoked_at=now)
            self._write_state(replace(state, revocations=(*state.revocations, revocation)))
        return revocation

    def crl(self, now: datetime) -> bytes:
        """A fresh DER CRL; its number is persisted before signing, so it never repeats."""
        with _locked(self._lock_path):
            state = self._read_state()
            state = replace(state, crl_number=state.crl_number + 1)
            self._write_state(state)
        return build_crl(
            self.authority,
            state.revocations,
            number=state.crl_number,
            now=now,
            lifetime=self.config.crl_lifetime,
        )

    def _read_state(self) -> _State:
        try:
            raw = self._state_path.read_bytes()
        except FileNotFoundError:
            return _State(crl_number=0, revocations=())
        key_id = self.authority.key_id.hex()
        try:
            document = json.loads(raw)
            owner = document["authority_key_id"]
            state = _State(
                crl_number=int(document["crl_number"]),
                revocations=tuple(
                    RevokedSerial(
                        serial=parse_serial(entry["serial"]),
                        reason=RevocationReason(entry["reason"]),
                        revoked_at=datetime.fromisoformat(entry["revoked_at"]),
                    )
                    for entry in document["revocations"]
                ),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalCAError(
                f"{self._state_path} is damaged ({exc!r}); restore it from a backup."
            ) from exc
        if owner != key_id:
            raise LocalCAError(
                f"{self._state_path} belongs to the CA with key id {owner}, not this CA "
                f"({key_id}); point data_dir at a directory of its own for this CA."
            )
        return state

    def _write_state(self, state: _State) -> None:
        document = {
            "format": _STATE_FORMAT,
            "authority_key_id": self.authority.key_id.hex(),
            "crl_number": state.crl_number,
            "revocations": [
                {
                    "serial": format_serial(revocation.serial),
                    "reason": revocation.reason.value,
                    "revoked_at": revocation.revoked_at.isoformat(),
                }
                for revocation in state.revocations
            ],
        }
        write_atomic(self._state_path, json.dumps(document, indent=1).encode())


def _root(config: LocalCAConfig, now: datetime) -> CertificateAuthority:
    if not config.passphrase:
        raise LocalCAError(
            "the self-signed local CA seals its root key with the configuration passphrase; "
            "set CERTCTL_CONFIG_ENCRYPTION_KEY, or set ca_cert_path and ca_key_path."
        )
    cert_path, key_path = config.data_dir / ROOT_CERT, config.data_dir / ROOT_KEY
    passphrase = config.passphrase
    if cert_path.exists():
        certs = _read(cert_path, "CA certificate", load_certificates)
        key = _read(
            key_path,
            "CA key",
            lambda blob: load_private_key(unseal(blob, passphrase, _root_aad(certs[0]))),
        )
    else:
        key = generate_key(ECDSA_P256)
        certs = [self_signed_root(key, config.common_name, now, config.root_lifetime)]
        _store(config.data_dir, certs, key, passphrase)
    return CertificateAuthority.load(
        certs[0],
        key,
        tuple(certs[1:]),
        now,
        source=f"CA certificate {cert_path}",
        crl_url=config.crl_url,
    )


def _store(
    data_dir: Path, certs: Sequence[x509.Certificate], key: SigningKey, passphrase: str
) -> None:
    """The key sealed for its certificate, then the certificates: ``ca.pem`` is written
    last, so its presence marks a complete pair and a crash in between leaves none."""
    write_atomic(data_dir / ROOT_KEY, seal(private_key_pem(key), passphrase, _root_aad(certs[0])))
    write_atomic(
        data_dir / ROOT_CERT,
        b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs),
    )


def import_ca(
    data_dir: Path, cert_pem: bytes, key_pem: bytes, passphrase: str, now: datetime
) -> CertificateAuthority:
    """Keep an operator's CA (certificate, then any issuers above it, and its key) in
    ``data_dir`` as a local CA does its own root: the key sealed with ``passphrase``.

    Checked first (a CA certificate, the key matches, valid now, the chain in order);
    refuses a ``data_dir`` that already holds a CA, whose issued certificates and CRL
    would stop chaining.
    """
    if not passphrase:
        raise LocalCAError(
            "importing a CA seals its key with the configuration passphrase; set "
            "CERTCTL_CONFIG_ENCRYPTION_KEY."
        )
    if (data_dir / ROOT_CERT).exists() or (data_dir / ROOT_KEY).exists():
        raise LocalCAError(
            f"{data_dir} already holds a CA; import under another issuer id, or move that "
            "directory away if the issuer is no longer used."
        )
    try:
        certs = load_certificates(cert_pem)
        key = load_private_key(key_pem)
    except PKIError as exc:
        raise LocalCAError(f"the CA to import is not usable: {exc}") from exc
    authority = CertificateAuthority.load(
        certs[0], key, tuple(certs[1:]), now, source="the CA certificate to import"
    )
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(data_dir / LOCK):
        _store(data_dir, certs, key, passphrase)
    return authority


def _root_aad(cert: x509.Certificate) -> bytes:
    """Binds the sealed key to its certificate: a key file swapped in from elsewhere fails."""
    return b"certctl/local-ca/root-key/" + fingerprint_sha256(cert).encode()


def _sub_ca(
    cert_path: Path, key_path: Path, crl_url: str | None, now: datetime
) -> CertificateAuthority:
    certs = _read(cert_path, "ca_cert_path", load_certificates)
    key = _read(key_path, "ca_key_path", load_private_key)
    return CertificateAuthority.load(
        certs[0], key, tuple(certs[1:]), now, source=f"ca_cert_path {cert_path}", crl_url=crl_url
    )


def _read(path: Path, what: str, parse: Callable[[bytes], _T]) -> _T:
    """Read and parse one of the CA's files, naming the file in any refusal."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise LocalCAError(
            f"{what} {path} cannot be read ({exc.strerror}); make it a readable file."
        ) from exc
    try:
        return parse(data)
    except PKIError as exc:
        raise LocalCAError(f"{what} {path}: {exc}") from exc


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock: processes sharing the data dir take turns on its files."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
