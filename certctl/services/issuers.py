"""Open issuer connectors for ``Issuer`` rows, once per process, and cache their CRLs.

Opening a local CA reads (or, on first use, creates) its root in the data dir, which is
blocking file I/O and a key generation: done once per issuer in a worker thread and kept.
CRLs are cached because every ``LocalCA.crl`` call signs a new CRL with a new number;
clients fetching the CRL must get the same bytes (and ETag) until the scheduler refreshes it
or a revocation changes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import trio

from certctl.connectors.issuers.local import LocalCA, LocalCAConfig
from certctl.core.model import Issuer, IssuerType, JSONValue
from certctl.pki.errors import PKIError
from certctl.services.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class CRL:
    der: bytes
    etag: str
    generated_at: datetime


DEFAULT_ISSUER_ID: Final = "iss-local"
"""The local CA every installation starts with; the only one ``CERTCTL_CA_CERT_PATH`` and
``CERTCTL_CA_KEY_PATH`` (server-side sub-CA mode) apply to."""
CONFIG_KEYS: Final = frozenset({"common_name", "leaf_validity_days"})
"""What a local CA issuer's config may hold. CA material is never among them: a key path
from the API would let any admin key point the server at any CA key it can read."""


@dataclass(frozen=True, slots=True)
class IssuerDefaults:
    """Process-wide issuer settings: where CA data lives and what seals its keys.

    ``ca_cert_path``/``ca_key_path`` are the server's sub-CA (from its own settings),
    used by the default issuer only; every other local CA keeps its own CA in its data
    dir, generated there or imported with ``certctl issuer import-ca``.
    """

    data_dir: Path
    passphrase: str | None = None
    ca_cert_path: Path | None = None
    ca_key_path: Path | None = None
    crl_base_url: str | None = None


class IssuerPool:
    def __init__(self, defaults: IssuerDefaults) -> None:
        self.defaults = defaults
        self._open: dict[str, LocalCA] = {}
        self._crls: dict[str, CRL] = {}
        self._lock = trio.Lock()

    async def get(self, issuer: Issuer, now: datetime) -> LocalCA:
        """The connector for ``issuer``; ``InvalidInput`` if its configuration is unusable."""
        async with self._lock:
            ca = self._open.get(issuer.id)
            if ca is None:
                try:
                    config = self.local_config(issuer)
                except InvalidInput as exc:
                    raise InvalidInput(
                        f"issuer {issuer.id} cannot be opened: {exc.message}", field=exc.field
                    ) from exc
                try:
                    ca = await trio.to_thread.run_sync(LocalCA.open, config, now)
                except PKIError as exc:
                    raise InvalidInput(
                        f"issuer {issuer.id} cannot be opened: {exc}", field="config"
                    ) from exc
                self._open[issuer.id] = ca
            return ca

    def local_config(self, issuer: Issuer) -> LocalCAConfig:
        """The connector config of ``issuer``; ``InvalidInput`` naming the field at fault."""
        if issuer.type is not IssuerType.LOCAL_CA:
            raise InvalidInput(f"issuer type {issuer.type} is not supported; use LocalCA.")
        config = issuer.config
        for key in sorted(set(config) - CONFIG_KEYS):
            hint = (
                "CA material is never taken from the API; import an existing CA on the server "
                "host with `certctl issuer import-ca --cert ... --key ...`"
                if key in ("ca_cert_path", "ca_key_path")
                else f"a LocalCA config takes {', '.join(sorted(CONFIG_KEYS))}"
            )
            raise InvalidInput(f"config.{key} is not accepted; {hint}.", field=f"config.{key}")
        own_default = issuer.id == DEFAULT_ISSUER_ID
        cert_path = self.defaults.ca_cert_path if own_default else None
        key_path = self.defaults.ca_key_path if own_default else None
        validity_days = _validity_days(config)
        base = self.defaults.crl_base_url
        return LocalCAConfig(
            data_dir=self.defaults.data_dir / "issuers" / issuer.id,
            passphrase=self.defaults.passphrase,
            ca_cert_path=cert_path,
            ca_key_path=key_path,
            common_name=str(config.get("common_name") or "certctl Local CA"),
            crl_url=None if base is None else f"{base.rstrip('/')}/{issuer.id}",
            **({} if validity_days is None else {"leaf_validity": timedelta(days=validity_days)}),
        )

    async def crl(self, issuer: Issuer, now: datetime, *, refresh: bool = False) -> CRL:
        cached = self._crls.get(issuer.id)
        if cached is not None and not refresh:
            return cached
        ca = await self.get(issuer, now)
        der = await trio.to_thread.run_sync(ca.crl, now)
        crl = CRL(der, f'"{hashlib.sha256(der).hexdigest()[:32]}"', now)
        self._crls[issuer.id] = crl
        return crl

    def forget_crl(self, issuer_id: str) -> None:
        """A revocation changed the list: the next fetch signs a fresh CRL."""
        self._crls.pop(issuer_id, None)


MAX_LEAF_VALIDITY_DAYS = 3650


def _validity_days(config: Mapping[str, JSONValue]) -> int | None:
    """``leaf_validity_days``: whole days from 1 to ten years, or unset for the default.

    Anything else is refused here rather than ignored (a typo must not silently give the
    default) or passed on (a huge number overflows ``timedelta``, a 500 on create).
    """
    value = config.get("leaf_validity_days")
    if value is None:
        return None
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 1 <= value <= MAX_LEAF_VALIDITY_DAYS
    ):
        raise InvalidInput(
            f"config.leaf_validity_days must be a whole number of days from 1 to "
            f"{MAX_LEAF_VALIDITY_DAYS}; fix it or leave it out for the default.",
            field="config.leaf_validity_days",
        )
    return value
