"""``certctl agent validate-target``: validate a target config, then dry-run its deploy.

Returns an exit status and one line, so the CLI stays a thin shell and tests need no
process: 0 valid and every check passed, 2 the config (or a PEM file given) is unusable,
1 a check of the staged material failed.
"""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path
from typing import Any

import trio

from certctl.connectors.targets.base import Guard, Material, TargetConfigInvalid, sample_material
from certctl.connectors.targets.registry import load_connector
from certctl.deploy import PolicyRefused, ValidateFailed

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class _Unusable(Exception):
    pass


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Unusable(
            f"cannot read {what} {path} ({exc.strerror}); give a readable file."
        ) from None


def _config(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(_read(path, "target config"))
    except json.JSONDecodeError as exc:
        raise _Unusable(f"{path} is not JSON ({exc.msg}, line {exc.lineno}); fix it.") from None
    if not isinstance(raw, dict):
        raise _Unusable(f"{path} holds JSON but not an object; write {{...}}.")
    return raw


def _material(cert: Path | None, chain: Path | None, key: Path | None, name: str) -> Material:
    if cert is None and key is None and chain is None:
        return sample_material(name)
    if cert is None or key is None:
        raise _Unusable("--cert and --key go together; give both, or neither for a sample.")
    chain_pem = b"" if chain is None else _read(chain, "chain")
    return Material(_read(cert, "certificate"), chain_pem, _read(key, "key"))


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def validate_target(
    type_name: str,
    config_path: Path,
    cert: Path | None = None,
    chain: Path | None = None,
    key: Path | None = None,
    *,
    guard: Guard | None = None,
) -> tuple[int, str]:
    """Validate and dry-run one target config; ``guard`` is the host policy to apply."""
    try:
        connector = load_connector(type_name, _config(config_path))
        name = connector.config.post_deploy_verify.server_name or "localhost"
        material = _material(cert, chain, key, name)
    except (_Unusable, TargetConfigInvalid) as exc:
        return EXIT_INVALID, str(exc)
    run = functools.partial(
        connector.validate_only,
        material.cert_pem,
        material.chain_pem,
        material.key_pem,
        guard=guard,
    )
    try:
        dry = trio.run(run)
    except (ValidateFailed, PolicyRefused) as exc:
        return EXIT_FAILED, _one_line(str(exc))
    ran = "; ".join(shlex.join(check.argv) for check in dry.checks) or "no commands"
    notes = "".join(f" Note: {note}" for note in dry.notes)
    return (
        EXIT_OK,
        f"{connector.target_type.value} target config is valid and the dry run passed "
        f"(ran: {ran}); nothing was changed.{notes}",
    )
