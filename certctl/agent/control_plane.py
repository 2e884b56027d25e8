"""What the agent asks of the control plane, as a protocol over ``certctl.protocol``'s messages.

The runner depends only on ``ControlPlane``: ``HttpControlPlane`` speaks the HTTPS protocol
of docs/agent-protocol.md, and the fleet simulator plugs in an implementation that calls
``certctl.services`` in process, so the same runner code is exercised by both.

Errors are protocol-level, not HTTP-level, so the runner never imports httpx:
``AgentRetired`` (410) and ``Unauthorized`` (401) end the agent, everything else is a
``ControlPlaneError`` the runner retries or reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from certctl.core.errors import CertctlError
from certctl.core.model import JobStatus
from certctl.protocol import (
    AgentIdentity,
    CertificateMaterial,
    HostFacts,
    IssuedVersion,
    TargetSpec,
    Verification,
    Work,
)


class ControlPlaneError(CertctlError):
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


class NotThisAgents(ControlPlaneError):
    """403: the job, certificate or target belongs to another agent."""


# The control plane refusing the agent itself, as opposed to one call: the agent stops.
FATAL = (AgentRetired, Unauthorized)


class ControlPlane(Protocol):
    """The agent's side of docs/agent-protocol.md; each call is one request."""

    async def register(
        self, bootstrap_token: str, name: str, facts: HostFacts
    ) -> AgentIdentity: ...

    async def heartbeat(self, agent: AgentIdentity, facts: HostFacts) -> None: ...

    async def work(
        self,
        agent: AgentIdentity,
        *,
        resume: bool = False,
        wait: int = 0,
        facts: HostFacts | None = None,
    ) -> Work:
        """Claimed work; ``resume`` also returns this agent's deployments already Running
        (the first poll after a start, so jobs interrupted by a crash are finished).
        ``wait`` > 0 asks the server to hold the poll until there is work (a long poll,
        carrying ``facts`` as its heartbeat); ``Work.wait_seconds`` says whether it did."""

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
