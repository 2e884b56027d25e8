"""Private keys generated on this host, found again by the certificate they belong to.

Each key is ``keys/<certificate_id>/<spki_sha256>.pem`` (0600, in 0700 directories), named
by the SHA-256 of its public key. A deploy looks its key up by the public key of the leaf
it is about to write, never by "the latest key of this certificate": a renewal that
generated a key and then failed (CSR refused, control plane down) must not break
redeploying the current version, whose key is still here under its own name.

Pruning keeps the key of the deployed version and the newest keys after it (renewals in
flight), at most ``KEEP`` in all; which key is deployed is remembered in a ``deployed``
file, so keys made by repeated failed renewals are bounded even between deploys.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from certctl.agent.files import private_dir, write_private
from certctl.core.errors import CertctlError
from certctl.pki.errors import PKIError
from certctl.pki.keys import SigningKey, private_key_pem
from certctl.pki.pem import load_private_key

KEEP = 3
DEPLOYED_FILE = "deployed"
_KEY_NAME = re.compile(r"[0-9a-f]{64}")
# Ids come from the control plane and become directory names: no separators, no dot names.
_CERTIFICATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class KeyStoreError(CertctlError):
    """A key cannot be stored or read; the message names the file and the fix."""


def spki_sha256(public_key: CertificatePublicKeyTypes) -> str:
    """Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER: one name per key pair."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


class KeyStore:
    """Blocking file I/O: the runner calls it from a worker thread; a lock orders the calls."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def store(self, certificate_id: str, key: SigningKey) -> Path:
        """Write ``key`` for ``certificate_id``, then prune that certificate's old keys."""
        directory = self._directory(certificate_id)
        path = directory / f"{spki_sha256(key.public_key())}.pem"
        with self._lock:
            try:
                private_dir(private_dir(self.root) / certificate_id)
                newest = max((stamp for stamp, _ in _keys_by_age(directory)), default=0)
                write_private(path, private_key_pem(key))
                # Strictly newer than every other key even within one clock tick, since
                # pruning goes by age.
                stamp = max(time.time_ns(), newest + 1)
                os.utime(path, ns=(stamp, stamp))
            except OSError as exc:
                raise KeyStoreError(
                    f"storing the new private key at {path} failed ({exc.strerror}); give the "
                    f"agent's user write access to {self.root}."
                ) from None
            self._prune(directory)
        return path

    def find(self, certificate_id: str, public_key: CertificatePublicKeyTypes) -> SigningKey | None:
        """The private half of ``public_key``, or ``None`` if this host never made it."""
        path = self._directory(certificate_id) / f"{spki_sha256(public_key)}.pem"
        try:
            key = load_private_key(path.read_bytes())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(
                f"private key {path} cannot be read ({exc.strerror}); give the agent's user "
                "access to it."
            ) from None
        except PKIError as exc:
            raise KeyStoreError(
                f"private key {path} is damaged ({exc}); renew the certificate."
            ) from None
        if spki_sha256(key.public_key()) != path.stem:
            raise KeyStoreError(
                f"private key {path} does not match its file name; it was replaced outside the "
                "agent, so renew the certificate."
            )
        return key

    def mark_deployed(
        self, certificate_id: str, public_key: CertificatePublicKeyTypes
    ) -> list[Path]:
        """Remember the deployed key and prune the others; returns the removed files."""
        directory = self._directory(certificate_id)
        with self._lock:
            try:
                write_private(directory / DEPLOYED_FILE, spki_sha256(public_key).encode())
            except OSError as exc:
                raise KeyStoreError(
                    f"recording the deployed key in {directory} failed ({exc.strerror}); give "
                    f"the agent's user write access to {self.root}."
                ) from None
            return self._prune(directory)

    def _directory(self, certificate_id: str) -> Path:
        if not _CERTIFICATE_ID.fullmatch(certificate_id) or certificate_id in {".", ".."}:
            raise KeyStoreError(
                f"certificate id {certificate_id!r} cannot name a key directory; the control "
                "plane sent an id with characters other than letters, digits, '.', '_', '-'."
            )
        return self.root / certificate_id

    def _prune(self, directory: Path) -> list[Path]:
        """Keep the deployed key and at most ``KEEP`` keys in all, preferring newer ones.

        Keys older than the deployed one belong to versions no deploy will ask for again
        (the control plane hands out only a certificate's newest version). Best effort: a
        key that cannot be removed now is removed by a later prune.
        """
        try:
            names = [name for _, name in _keys_by_age(directory)]
        except OSError:
            return []
        try:
            anchor = (directory / DEPLOYED_FILE).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            anchor = ""
        if anchor in names:
            keep = {anchor, *names[: names.index(anchor)][: KEEP - 1]}
        else:
            keep = set(names[:KEEP])
        removed = []
        for name in names:
            if name not in keep:
                path = directory / f"{name}.pem"
                try:
                    path.unlink()
                except OSError:
                    continue
                removed.append(path)
        return removed


def _keys_by_age(directory: Path) -> list[tuple[int, str]]:
    """``(mtime_ns, spki_sha256)`` of each key in ``directory``, newest first."""
    if not directory.is_dir():
        return []
    found = [
        (path.stat().st_mtime_ns, path.stem)
        for path in directory.glob("*.pem")
        if _KEY_NAME.fullmatch(path.stem)
    ]
    return sorted(found, reverse=True)
