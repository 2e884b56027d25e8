"""The secret rule for issuer and target configs, and its sealing.

Rule: the top-level ``"secret"`` key of a config holds the secrets, as a JSON object of
named values (``{"secret": {"api_token": "...", "hmac_key": "..."}}``). The store takes it
out before the config is stored, seals it with ``certctl.pki.sealed`` under
``CERTCTL_CONFIG_ENCRYPTION_KEY``, and keeps the blob in the row's ``encrypted_secret``
column. One key with a fixed name, rather than per-connector lists of secret fields, means
a new connector cannot forget to declare a field and leak it as plaintext.

The associated data names the table and row (``b"issuers/iss-1/secret"``), so a blob copied
onto another row, or from an issuer onto a target, fails to open instead of handing one
connector another's credentials.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Final

from certctl.core.model import Issuer, JSONValue, Target
from certctl.pki.sealed import seal, unseal
from certctl.store.rows import Table, json_value

SECRET_KEY: Final = "secret"  # noqa: S105 - the name of a config key, not a credential


def split_secret(
    label: str, config: Mapping[str, JSONValue]
) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
    """``(config without the secret, the secret)``; the secret is ``None`` when absent,
    which tells an update to keep the stored one."""
    public = {key: value for key, value in config.items() if key != SECRET_KEY}
    if SECRET_KEY not in config:
        return public, None
    secret = config[SECRET_KEY]
    if not isinstance(secret, Mapping):
        raise ValueError(  # noqa: TRY004 - API input, answered with a 4xx like other values
            f'{label}["{SECRET_KEY}"] is a {type(secret).__name__}; make it a JSON object '
            'of named secrets such as {"api_token": "..."}.'
        )
    return public, json_value(f'{label}["{SECRET_KEY}"]', secret)


def _aad(table: str, row_id: str) -> bytes:
    return f"{table}/{row_id}/{SECRET_KEY}".encode()


def seal_secret(
    table: str, row_id: str, secret: Mapping[str, Any], passphrase: str
) -> bytes | None:
    """The blob to store, or ``None`` for an empty secret (nothing to keep)."""
    if not secret:
        return None
    plaintext = json.dumps(secret, sort_keys=True, separators=(",", ":")).encode()
    return seal(plaintext, passphrase, _aad(table, row_id))


def open_secret(
    table: str, row_id: str, blob: bytes | None, passphrase: str
) -> Mapping[str, JSONValue]:
    if blob is None:
        return MappingProxyType({})
    return MappingProxyType(json.loads(unseal(blob, passphrase, _aad(table, row_id))))


def sealed_row(
    table: Table[Any], entity: Issuer | Target, passphrase: str, *, keep: bool
) -> dict[str, Any]:
    """The row of ``entity`` with its secret sealed into ``encrypted_secret``.

    ``keep`` (an update) leaves ``encrypted_secret`` out of the row when the config carries
    no secret, so the stored blob stays; a create stores NULL instead.
    """
    public, secret = split_secret(f"{type(entity).__name__}.config", entity.config)
    row = table.encode(replace(entity, config=public))
    if secret is not None:
        row["encrypted_secret"] = seal_secret(table.name, entity.id, secret, passphrase)
    elif not keep:
        row["encrypted_secret"] = None
    return row
