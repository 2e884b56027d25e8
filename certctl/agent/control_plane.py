"""What the agent asks of the control plane, as a protocol over plain data.

The runner depends only on ``ControlPlane``: ``HttpControlPlane`` speaks the HTTPS protocol
of docs/agent-protocol.md, and the fleet simulator plugs in an implementation that calls
``certctl.services`` in process, so the same runner code is exercised by both.

Errors are protocol-level, not HTTP-level, so the runner never imports httpx:
``AgentRetired`` (410) and ``Unauthorized`` (401) end the agent, everything else is a
``ControlPlaneError`` the runner retries or reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from certctl.core.model import JobStatus, JobType, KeyAlgorithm, VerificationStatus


class ControlPlaneError(Exception):
    """A call failed; ``status`` is the HTTP status (``None``: the server was not reached)
    and ``code`` the machine-readable ``error`` of the JSON error body."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AgentRetired(ControlPlaneError):
    """410: an operator retired this agent; it must stop and not be restarted."""


class Unauthorized(ControlPlaneError):
    """401: the bootstrap token or the agent key was refused."""


class Forbidden(ControlPlaneError):
    """403: the job, certificate or target belongs to another agent."""


# The control plane refusing the agent itself, as opposed to one call: the agent stops.
FATAL = (AgentRetired, Unauthorized)


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Returned once by registration; every later call is made as this agent."""

    agent_id: str
    agent_key: str


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What the agent says about its host; empty values are left out of heartbeats."""

    hostname: str
    os: str = ""
    architecture: str = ""
    ip_address: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A deployment target as the agent receives it; ``config`` may hold a ``secret``."""

    id: str
    name: str
    type: str
    config: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One job: an AwaitingCSR issuance or renewal, or a claimed (Running) deployment."""

    job_id: str
    type: JobType
    status: JobStatus
    certificate_id: str
    common_name: str
    sans: tuple[str, ...]
    key_algorithm: KeyAlgorithm
    key_size: int
    target: TargetSpec | None


@dataclass(frozen=True, slots=True)
class IssuedVersion:
    """The certificate version a CSR produced."""

    id: str
    serial_number: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True)
class CertificateMaterial:
    """The newest version of a certificate: the leaf and its chain, never a key."""

    certificate_id: str
    version_id: str
    serial_number: str
    fingerprint_sha256: str
    not_after: datetime
    cert_pem: str
    chain_pem: str


@dataclass(frozen=True, slots=True)
class Verification:
    """The post-deploy handshake, as reported with a job's status."""

    status: VerificationStatus
    fingerprint: str | None = None
    error: str | None = None


class ControlPlane(Protocol):
    """The agent's side of docs/agent-protocol.md; each call is one request."""

    async def register(
        self, bootstrap_token: str, name: str, facts: HostFacts
    ) -> AgentIdentity: ...

    async def heartbeat(self, agent: AgentIdentity, facts: HostFacts) -> None: ...

    async def work(self, agent: AgentIdentity, *, resume: bool = False) -> Sequence[WorkItem]:
        """Claimed work; ``resume`` also returns this agent's deployments already Running
        (the first poll after a start, so jobs interrupted by a crash are finished)."""

    async def submit_csr(
        self, agent: AgentIdentity, job_id: str, csr_pem: str
    ) -> IssuedVersion: ...

    async def certificate(
        self, agent: AgentIdentity, certificate_id: str
    ) -> CertificateMaterial: ...

    async def report_status(
        self,
        agent: AgentIdentity,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        verification: Verification | None = None,
    ) -> None: ...

    async def targets(self, agent: AgentIdentity) -> Sequence[TargetSpec]: ...
