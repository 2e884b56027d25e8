"""The agent <-> control-plane messages (docs/agent-protocol.md), defined once.

The server validates agent requests and its own answers against these models, the
services build them, and the agent client parses answers into them, so the three sides
cannot drift apart. The JSON field names are the wire format: renaming one breaks every
agent already installed.

Two kinds of message, two rules: what an agent sends (``AgentRequest``) refuses unknown
fields and hostile characters, because it comes from a host the server does not control;
what the server answers (``ServerAnswer``) ignores unknown fields, so a newer control plane
can add one without breaking older agents. This module imports nothing of ours but
``certctl.core`` (DESIGN.md: protocol sits beside core).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from certctl.core.model import (
    AgentStatus,
    JobStatus,
    JobType,
    KeyAlgorithm,
    VerificationStatus,
)
from certctl.core.text import bound_free_text, describe, hostile_in_name, hostile_in_text

__all__ = [
    "FACT_HEADERS",
    "PEM",
    "AgentIdentity",
    "AgentRequest",
    "CSRAnswer",
    "CSRSubmission",
    "CertificateMaterial",
    "FreeText",
    "HeartbeatAnswer",
    "HostFacts",
    "Id",
    "IssuedVersion",
    "Name",
    "Registration",
    "ServerAnswer",
    "StatusReport",
    "TargetList",
    "TargetSpec",
    "Verification",
    "Work",
    "WorkItem",
    "fact_headers",
    "facts_from_headers",
    "printable",
]


def printable(value: str) -> str:
    """The value, unless it holds a control or bidi character (a name is one line)."""
    char = hostile_in_name(value)
    if char is not None:
        raise ValueError(f"{describe(char)} is not allowed here (no control or bidi characters)")
    return value


def _free_text(value: object) -> object:
    """Multi-line output (a failed ``nginx -t``): newlines and tabs kept, other control
    characters refused, and anything past ``FREE_TEXT_LIMIT`` cut with a marker."""
    if not isinstance(value, str):
        return value
    char = hostile_in_text(value)
    if char is not None:
        raise ValueError(f"{describe(char)} is not allowed in text (newlines and tabs are)")
    return bound_free_text(value)


FreeText = Annotated[str, BeforeValidator(_free_text)]
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(printable)]
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
PEM = Annotated[str, Field(min_length=1, max_length=65_536)]
Fact = Name | Literal[""]


class AgentRequest(BaseModel):
    """A body an agent sends: strict, a misspelt field is refused rather than ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerAnswer(BaseModel):
    """A body the control plane answers: unknown fields are ignored by older agents."""

    model_config = ConfigDict(frozen=True)


# -- registration and heartbeats ------------------------------------------------------


class HostFacts(AgentRequest):
    """What the agent says about its host; the heartbeat body. Empty values are left out
    on the wire, because the server replaces each stored fact with the one sent."""

    hostname: Fact = ""
    os: Fact = ""
    architecture: Fact = ""
    ip_address: Fact = ""
    version: Fact = ""

    def present(self) -> dict[str, str]:
        """The non-empty facts, as sent."""
        return {key: value for key, value in self.model_dump().items() if value}


class Registration(HostFacts):
    """``POST /agents/register``: the agent's name and, required here, its host name."""

    name: Name
    hostname: Name


class AgentIdentity(ServerAnswer):
    """The registration answer; every later call is made as this agent. The key is shown
    once: the server keeps only its hash."""

    agent_id: str
    agent_key: str


class HeartbeatAnswer(ServerAnswer):
    status: AgentStatus
    server_time: datetime


# -- work -----------------------------------------------------------------------------


class TargetSpec(ServerAnswer):
    """A deployment target as the agent receives it; ``config`` may hold a ``secret``."""

    id: str
    name: str
    type: str
    config: dict[str, Any]


class WorkItem(ServerAnswer):
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


class Work(ServerAnswer):
    """``GET /agents/{id}/work``.

    ``wait_seconds`` is how long the server was prepared to hold this poll: 0 means a
    short poll (the agent asked for none, the server predates long polls and so leaves
    the field out, or this replica already holds its maximum of waiting polls), and the
    agent then polls on its interval and sends heartbeats; above 0 the poll itself is the
    heartbeat and the agent asks again as soon as it has handled the answer.
    """

    count: int
    jobs: tuple[WorkItem, ...]
    wait_seconds: int = 0


FACT_HEADERS = {
    "hostname": "Certctl-Hostname",
    "os": "Certctl-Os",
    "architecture": "Certctl-Architecture",
    "ip_address": "Certctl-Ip-Address",
    "version": "Certctl-Version",
}
"""A long poll carries the heartbeat's facts in these request headers (a GET has no
body), each value percent-encoded UTF-8 (a header is ASCII); an absent header leaves the
stored fact as it is, as in the heartbeat body."""


def fact_headers(facts: HostFacts) -> dict[str, str]:
    """The headers an agent sends its facts in."""
    return {FACT_HEADERS[n]: quote(v, safe="") for n, v in facts.present().items()}


def facts_from_headers(lookup: Callable[[str], str | None]) -> HostFacts:
    """The facts a poll's headers carry (``lookup`` finds a header by name), validated
    like a heartbeat body; ``ValueError`` names the header at fault."""
    values = {}
    for name, header in FACT_HEADERS.items():
        try:
            values[name] = unquote(lookup(header) or "", errors="strict")
        except UnicodeDecodeError:
            raise ValueError(
                f"header {header} is not percent-encoded UTF-8; encode the value so."
            ) from None
    try:
        return HostFacts(**values)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        where = FACT_HEADERS.get(str(problem["loc"][0]), "a fact header")
        raise ValueError(f"header {where}: {problem['msg']}; send one printable line.") from None


class TargetList(ServerAnswer):
    """``GET /agents/{id}/targets``: the agent's usable targets, for ``--dry-run``."""

    targets: tuple[TargetSpec, ...]


# -- CSRs and certificate material -----------------------------------------------------


class CSRSubmission(AgentRequest):
    """``POST /agents/{id}/csr``: the CSR of a key the agent generated and keeps."""

    job_id: Id
    csr_pem: PEM


class IssuedVersion(ServerAnswer):
    """The certificate version a CSR produced."""

    id: str
    serial_number: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime


class CSRAnswer(ServerAnswer):
    job_id: str
    status: JobStatus
    version: IssuedVersion


class CertificateMaterial(ServerAnswer):
    """The newest version of a certificate: the leaf and its chain, never a key."""

    certificate_id: str
    version_id: str
    serial_number: str
    fingerprint_sha256: str
    not_after: datetime
    cert_pem: str
    chain_pem: str


# -- status reports --------------------------------------------------------------------


class Verification(AgentRequest):
    """The post-deploy handshake, as reported with a job's status."""

    status: VerificationStatus
    fingerprint: Annotated[str, Field(max_length=128)] | None = None
    error: FreeText | None = None


class StatusReport(AgentRequest):
    """``POST /agents/{id}/jobs/{job_id}/status``: how a deployment ended."""

    status: Literal["Completed", "Failed"]
    error: FreeText | None = None
    verification: Verification | None = None
