"""``ControlPlane`` over HTTPS (docs/agent-protocol.md), on one pooled httpx client.

The URL and the TLS context are checked when the client is built, before any request, so
an ``http://`` URL or an unusable CA bundle never reaches the network. Responses are
parsed into ``certctl.protocol``'s models; a body of the wrong shape is a
``ControlPlaneError``, never a half-read value in the runner.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from certctl import __version__
from certctl.agent.connection import (
    CA_BUNDLE_VAR,
    URL_VAR,
    check_server_url,
    client_ssl_context,
)
from certctl.agent.control_plane import (
    AgentRetired,
    ControlPlaneError,
    NotThisAgents,
    Unauthorized,
)
from certctl.config import Settings
from certctl.core.model import JobStatus
from certctl.protocol import (
    AgentIdentity,
    CertificateMaterial,
    CSRAnswer,
    CSRSubmission,
    HostFacts,
    IssuedVersion,
    TargetList,
    TargetSpec,
    Verification,
    Work,
    fact_headers,
)

TIMEOUT_SECONDS = 30.0
# A few connections are plenty for one agent; idle ones are kept long enough to span a
# poll interval so each poll does not pay for a new TLS handshake.
LIMITS = httpx.Limits(max_connections=10, max_keepalive_connections=4, keepalive_expiry=90.0)

_T = TypeVar("_T", bound=BaseModel)
# X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = frozenset({62, 64})
_ERRORS: Mapping[int, type[ControlPlaneError]] = {
    401: Unauthorized,
    403: NotThisAgents,
    410: AgentRetired,
}


class HttpControlPlane:
    """One agent's HTTPS client; use it as an async context manager to close the pool."""

    def __init__(
        self,
        url: str,
        *,
        ca_bundle: Path | None = None,
        insecure: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (tests); the checks run all the same."""
        self._url = check_server_url(url)
        context = client_ssl_context(ca_bundle, insecure=insecure)
        self._client = httpx.AsyncClient(
            base_url=f"{self._url}/api/v1",
            verify=context,
            timeout=TIMEOUT_SECONDS,
            limits=LIMITS,
            headers={"User-Agent": f"certctl-agent/{__version__}"},
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            settings.server_url,
            ca_bundle=settings.server_ca_bundle_path,
            insecure=settings.server_tls_insecure_skip_verify,
        )

    @property
    def url(self) -> str:
        return self._url

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    async def register(self, bootstrap_token: str, name: str, facts: HostFacts) -> AgentIdentity:
        body = {"name": name, **facts.present()}
        return await self._call("POST", "/agents/register", bootstrap_token, AgentIdentity, body)

    async def heartbeat(self, agent: AgentIdentity, facts: HostFacts) -> None:
        await self._send("POST", _path(agent, "heartbeat"), agent.agent_key, facts.present())

    async def work(
        self,
        agent: AgentIdentity,
        *,
        resume: bool = False,
        wait: int = 0,
        facts: HostFacts | None = None,
    ) -> Work:
        query = "&".join(
            part
            for part in ("resume=true" if resume else "", f"wait={wait}" if wait else "")
            if part
        )
        path = _path(agent, "work") + (f"?{query}" if query else "")
        # The server may hold the poll for ``wait`` seconds before it answers a byte.
        timeout = httpx.Timeout(TIMEOUT_SECONDS, read=wait + TIMEOUT_SECONDS)
        headers = fact_headers(facts) if facts is not None and wait else {}
        return await self._call(
            "GET", path, agent.agent_key, Work, timeout=timeout, headers=headers
        )

    async def submit_csr(self, agent: AgentIdentity, job_id: str, csr_pem: str) -> IssuedVersion:
        body = CSRSubmission(job_id=job_id, csr_pem=csr_pem).model_dump()
        answer = await self._call("POST", _path(agent, "csr"), agent.agent_key, CSRAnswer, body)
        return answer.version

    async def certificate(self, agent: AgentIdentity, certificate_id: str) -> CertificateMaterial:
        path = _path(agent, "certificates", certificate_id)
        return await self._call("GET", path, agent.agent_key, CertificateMaterial)

    async def report_status(
        self,
        agent: AgentIdentity,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        verification: Verification | None = None,
    ) -> None:
        body: dict[str, Any] = {"status": status.value}
        if error is not None:
            body["error"] = error
        if verification is not None:
            body["verification"] = verification.model_dump(mode="json")
        path = _path(agent, "jobs", job_id, "status")
        await self._send("POST", path, agent.agent_key, body)

    async def targets(self, agent: AgentIdentity) -> Sequence[TargetSpec]:
        answer = await self._call("GET", _path(agent, "targets"), agent.agent_key, TargetList)
        return answer.targets

    async def _call(
        self,
        method: str,
        path: str,
        token: str,
        shape: type[_T],
        body: Mapping[str, Any] | None = None,
        *,
        timeout: httpx.Timeout | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _T:
        """One request, its answer parsed as ``shape``."""
        response = await self._send(method, path, token, body, timeout=timeout, headers=headers)
        try:
            return shape.model_validate_json(response.content)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in problem["loc"]) or "body"
            raise ControlPlaneError(
                f"{method} {path} answered {response.status_code} with an unexpected body "
                f"({where}: {problem['msg']}); upgrade the agent or the control plane so "
                "their versions match.",
                status=response.status_code,
                code="bad_response",
            ) from None

    async def _send(
        self,
        method: str,
        path: str,
        token: str,
        body: Mapping[str, Any] | None = None,
        *,
        timeout: httpx.Timeout | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._client.request(
                method,
                path,
                json=body,
                headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                timeout=timeout if timeout is not None else TIMEOUT_SECONDS,
            )
        except httpx.TransportError as exc:
            raise ControlPlaneError(_unreachable(self._url, exc)) from exc
        if not response.is_success:
            raise _error(method, path, response)
        return response


def _path(agent: AgentIdentity, *parts: str) -> str:
    """Ids are quoted: one holding ``/`` or ``?`` must not reach another route."""
    return "/".join(("/agents", *(quote(part, safe="") for part in (agent.agent_id, *parts))))


def _unreachable(url: str, exc: httpx.TransportError) -> str:
    """The root cause, which httpx wraps in exceptions without a message."""
    chain = list(_causes(exc))
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            if cause.verify_code in _NAME_MISMATCH:
                return (
                    f"the certificate of the control plane at {url} does not name that host "
                    f"({cause.verify_message}); set {URL_VAR} to a name the certificate covers."
                )
            return (
                f"the control plane at {url} presented a certificate this agent does not trust "
                f"({cause.verify_message}); set {CA_BUNDLE_VAR} to the CA that signed it."
            )
    detail = next((str(c) for c in reversed(chain) if str(c)), type(exc).__name__)
    return (
        f"cannot reach the control plane at {url} ({detail}); check that it runs, answers "
        "TLS 1.3 and is reachable from this host."
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _error(method: str, path: str, response: httpx.Response) -> ControlPlaneError:
    """The JSON error body's ``message`` and ``error`` code, under the status's class."""
    code, message = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("error") or "")
        message = str(body.get("message") or "")
    if not message:
        message = f"{method} {path} answered {response.status_code} {response.reason_phrase}"
    kind = _ERRORS.get(response.status_code, ControlPlaneError)
    return kind(message, status=response.status_code, code=code)
