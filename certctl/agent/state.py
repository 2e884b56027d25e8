"""The agent's identity in its state directory: its id, its key, and whose agent it is.

``agent.json`` holds the agent id and the control plane's URL; the agent key, a bearer
credential, is in ``agent.key``. Both are 0600 in a 0700 directory and written key first,
so ``agent.json`` existing means the identity is complete. The URL is kept because an
identity is only valid on the control plane that issued it: pointed at another one, the
agent refuses to start rather than present its key there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from certctl.agent.files import private_dir, write_private
from certctl.config import ConfigError
from certctl.protocol import AgentIdentity

STATE_VAR = "CERTCTL_AGENT_STATE_DIR"
IDENTITY_FILE = "agent.json"
KEY_FILE = "agent.key"


class StateUnusable(ConfigError):
    """The state directory cannot be used, or holds an identity for another server."""

    def __init__(self, message: str) -> None:
        super().__init__(STATE_VAR, message)


@dataclass(frozen=True, slots=True)
class StoredIdentity:
    identity: AgentIdentity
    server_url: str


def open_state_dir(state_dir: Path) -> Path:
    """The state directory, created 0700 if missing."""
    try:
        return private_dir(state_dir)
    except OSError as exc:
        raise StateUnusable(
            f"{STATE_VAR}={state_dir} cannot be created or secured ({exc.strerror}); "
            "point it at a directory the agent's user owns."
        ) from None


def load_identity(state_dir: Path, server_url: str) -> AgentIdentity | None:
    """The stored identity, ``None`` before registration; refused if it names another server."""
    stored = read_identity(state_dir)
    if stored is None:
        return None
    if stored.server_url != server_url:
        raise StateUnusable(
            f"the agent in {state_dir / IDENTITY_FILE} is registered with {stored.server_url}, "
            f"not CERTCTL_SERVER_URL={server_url}; restore that URL, or move {IDENTITY_FILE} "
            f"and {KEY_FILE} away to register with the new control plane."
        )
    return stored.identity


def read_identity(state_dir: Path) -> StoredIdentity | None:
    path = state_dir / IDENTITY_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        key = (state_dir / KEY_FILE).read_text(encoding="utf-8").strip()
        identity = AgentIdentity(agent_id=str(record["agent_id"]), agent_key=key)
        server_url = str(record["server_url"])
    except FileNotFoundError as exc:
        if exc.filename == str(path):
            return None
        raise StateUnusable(
            f"{path} exists but {exc.filename} is missing; move {IDENTITY_FILE} away to "
            "register the agent again."
        ) from None
    except OSError as exc:
        raise StateUnusable(
            f"{exc.filename} cannot be read ({exc.strerror}); give the agent's user access to "
            f"{STATE_VAR}={state_dir}."
        ) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise StateUnusable(
            f"{path} is damaged ({type(exc).__name__}: {exc}); move it and {KEY_FILE} away to "
            "register the agent again."
        ) from None
    if not identity.agent_id or not identity.agent_key:
        raise StateUnusable(
            f"{path} or {KEY_FILE} is empty; move both away to register the agent again."
        )
    return StoredIdentity(identity, server_url)


def save_identity(state_dir: Path, stored: StoredIdentity) -> None:
    record = {"agent_id": stored.identity.agent_id, "server_url": stored.server_url}
    try:
        open_state_dir(state_dir)
        write_private(state_dir / KEY_FILE, stored.identity.agent_key.encode() + b"\n")
        write_private(state_dir / IDENTITY_FILE, json.dumps(record, indent=2).encode() + b"\n")
    except OSError as exc:
        raise StateUnusable(
            f"saving the agent identity in {state_dir} failed at {exc.filename} "
            f"({exc.strerror}); give the agent's user write access to {STATE_VAR}."
        ) from None
