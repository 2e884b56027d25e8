"""Who is calling: operator API keys, agent keys, and the agent bootstrap token.

Operator keys come from ``CERTCTL_API_KEYS`` and are kept only as SHA-256 digests; a
presented token is hashed and compared with every digest in constant time, so neither the
keys nor their count leak through timing. Several keys may share a name (rotation). Agent
keys live in the database, also hashed; their lookups are cached for a couple of seconds
because every agent call needs one and agents poll constantly.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from certctl.config import APIKey
from certctl.core.errors import CertctlError
from certctl.core.model import ActorType, Agent, KeyRole
from certctl.services.context import Actor


class Unauthenticated(CertctlError):
    """401: no credential, a malformed header, or a credential nobody issued."""


class Throttled(Unauthenticated):
    """429: the client's address failed authentication too often; nothing was checked."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def bearer(header: str | None) -> str:
    if not header:
        raise Unauthenticated(
            "Authorization header is missing; send `Authorization: Bearer <key>`."
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be `Bearer <key>`; fix its format.")
    return token.strip()


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    name: str
    role: KeyRole


class OperatorKeys:
    def __init__(self, keys: Sequence[APIKey]) -> None:
        self._entries = tuple(
            _Entry(hashlib.sha256(k.key.encode()).digest(), k.name, k.role) for k in keys
        )

    def actor(self, token: str) -> Actor | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: _Entry | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry
        if found is None:
            return None
        return Actor(found.name, ActorType.USER, role=found.role)


class AgentKeyCache:
    """Recent key-hash → agent lookups, so a polling fleet does not cost a query per call.

    Entries live ``ttl`` seconds: a retirement reaches a cached agent within that time.
    """

    def __init__(self, ttl: float = 2.0, size: int = 10_000) -> None:
        self._ttl = ttl
        self._size = size
        self._entries: dict[str, tuple[float, Agent]] = {}

    def get(self, key_hash: str) -> Agent | None:
        hit = self._entries.get(key_hash)
        if hit is None or trio.current_time() - hit[0] > self._ttl:
            return None
        return hit[1]

    def put(self, key_hash: str, agent: Agent) -> None:
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[key_hash] = (trio.current_time(), agent)

    def drop(self, agent_id: str) -> None:
        for key, (_, agent) in list(self._entries.items()):
            if agent.id == agent_id:
                del self._entries[key]
