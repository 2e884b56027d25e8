"""``HttpControlPlane``: URL and TLS checks before any request, then the wire protocol.

Requests go to an ``httpx.MockTransport`` that records them, so a refusal can be shown to
have happened before anything was sent. The wire format is docs/agent-protocol.md; the
real server answering over HTTPS is covered by the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from structlog.testing import capture_logs

from certctl.agent.connection import CABundleUnusable, ServerURLRefused, client_ssl_context
from certctl.agent.control_plane import (
    AgentRetired,
    ControlPlaneError,
    NotThisAgents,
    Unauthorized,
)
from certctl.agent.http import HttpControlPlane
from certctl.core.model import JobStatus, JobType, VerificationStatus
from certctl.pki.pem import certificates_pem
from certctl.protocol import AgentIdentity, HostFacts, Verification
from certctl.testing.material import ScratchCA

AGENT = AgentIdentity(agent_id="agent-7", agent_key="key-7")
URL = "https://cp.example.test:8443"


class Recorder:
    """A transport answering from a table of (method, path) → (status, body)."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, Any]] | None = None) -> None:
        self.answers = answers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.answers.get((request.method, request.url.path), (200, {}))
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "CERTCTL_SERVER_URL is empty; set it to the control plane's URL"),
        (
            "http://cp.example.test:8443",
            "uses plaintext http://, but the control plane is HTTPS-only; change it to "
            "https://cp.example.test:8443.",
        ),
        ("cp.example.test:8443", "is missing a scheme; write it as https://cp.example.test:8443."),
        ("ftp://cp.example.test", "uses unsupported scheme 'ftp'; use an https:// URL."),
        ("https://[::1", "is not a valid URL"),
        ("https://cp.example.test:99999", "is not a valid URL"),
        ("https:///api", "has no host"),
    ],
)
def test_unusable_urls_are_refused_before_any_request(url: str, message: str) -> None:
    recorder = Recorder()
    with pytest.raises(ServerURLRefused) as refused:
        HttpControlPlane(url, transport=recorder.transport())
    assert message in str(refused.value)
    assert str(refused.value).count(". ") == 0  # one sentence
    assert refused.value.variable == "CERTCTL_SERVER_URL"
    assert recorder.requests == []


def test_the_url_keeps_a_path_prefix_and_drops_a_trailing_slash() -> None:
    client = HttpControlPlane(
        "https://proxy.example.test/certctl/", transport=Recorder().transport()
    )
    assert client.url == "https://proxy.example.test/certctl"


def test_the_tls_context_requires_tls_1_3_and_verifies() -> None:
    context = client_ssl_context(None, insecure=False)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_a_ca_bundle_replaces_the_system_trust_store(tmp_path: Path) -> None:
    issuer = ScratchCA("bundle")
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(b"# our CA\n" + certificates_pem([issuer.root]))
    context = client_ssl_context(bundle, insecure=False)
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "bundle root"),),)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot be read (No such file or directory)"),
        (b"", "holds no PEM certificate"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "no PEM certificate"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "does not load",
        ),
    ],
)
def test_an_unusable_ca_bundle_names_the_variable(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_bytes(content)
    recorder = Recorder()
    with pytest.raises(CABundleUnusable) as refused:
        HttpControlPlane(URL, ca_bundle=bundle, transport=recorder.transport())
    assert str(refused.value).startswith(f"CERTCTL_SERVER_CA_BUNDLE_PATH={bundle} ")
    assert message in str(refused.value)
    assert recorder.requests == []


def test_skipping_verification_warns_on_every_start() -> None:
    with capture_logs() as logs:
        first = client_ssl_context(None, insecure=True)
        client_ssl_context(None, insecure=True)
    assert first.verify_mode is ssl.CERT_NONE
    assert not first.check_hostname
    assert first.minimum_version is ssl.TLSVersion.TLSv1_3
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert len(warnings) == 2
    assert "CERTCTL_SERVER_TLS_INSECURE_SKIP_VERIFY=true" in warnings[0]["event"]
    assert "never use this in production" in warnings[0]["event"]


# -- the wire protocol ---------------------------------------------------------------------


def client(recorder: Recorder) -> HttpControlPlane:
    return HttpControlPlane(URL, transport=recorder.transport())


async def test_register_uses_the_bootstrap_token_and_sends_the_host() -> None:
    recorder = Recorder(
        {("POST", "/api/v1/agents/register"): (201, {"agent_id": "agent-7", "agent_key": "k"})}
    )
    async with client(recorder) as plane:
        identity = await plane.register(
            "bootstrap", "web-01", HostFacts(hostname="web-01.example.test", os="linux")
        )
    assert identity == AgentIdentity(agent_id="agent-7", agent_key="k")
    (request,) = recorder.requests
    assert request.headers["Authorization"] == "Bearer bootstrap"
    assert json.loads(request.content) == {
        "name": "web-01",
        "hostname": "web-01.example.test",
        "os": "linux",
    }


async def test_agent_calls_use_the_agent_key_and_its_paths() -> None:
    issuer = ScratchCA("wire")
    version = issuer.issue("www.example.test")
    recorder = Recorder(
        {
            ("GET", "/api/v1/agents/agent-7/work"): (
                200,
                {
                    "count": 1,
                    "jobs": [
                        {
                            "job_id": "job-2",
                            "type": "Deployment",
                            "status": "Running",
                            "certificate_id": "cert-1",
                            "common_name": "www.example.test",
                            "sans": ["www.example.test"],
                            "key_algorithm": "ECDSA",
                            "key_size": 256,
                            "target": {
                                "id": "target-1",
                                "name": "web",
                                "type": "NGINX",
                                "config": {"cert_path": "/c.pem", "secret": {"token": "t"}},
                            },
                            "unknown_later_field": True,
                        }
                    ],
                },
            ),
            ("POST", "/api/v1/agents/agent-7/csr"): (
                200,
                {
                    "job_id": "job-1",
                    "status": "Completed",
                    "version": {
                        "id": "ver-1",
                        "serial_number": "0a",
                        "fingerprint_sha256": "ab" * 32,
                        "not_before": "2026-01-01T00:00:00Z",
                        "not_after": "2026-04-01T00:00:00Z",
                    },
                },
            ),
            ("GET", "/api/v1/agents/agent-7/certificates/cert-1"): (
                200,
                {
                    "certificate_id": "cert-1",
                    "version_id": "ver-1",
                    "serial_number": "0a",
                    "fingerprint_sha256": "ab" * 32,
                    "not_after": "2026-04-01T00:00:00Z",
                    "cert_pem": version.cert_pem.decode(),
                    "chain_pem": version.chain_pem.decode(),
                },
            ),
            ("GET", "/api/v1/agents/agent-7/targets"): (
                200,
                {"targets": [{"id": "target-1", "name": "web", "type": "File", "config": {}}]},
            ),
        }
    )
    async with client(recorder) as plane:
        await plane.heartbeat(AGENT, HostFacts(hostname="web-01", architecture="x86_64"))
        (item,) = (await plane.work(AGENT)).jobs
        issued = await plane.submit_csr(AGENT, "job-1", "-----BEGIN CERTIFICATE REQUEST-----")
        material = await plane.certificate(AGENT, "cert-1")
        await plane.report_status(
            AGENT,
            "job-2",
            JobStatus.COMPLETED,
            verification=Verification(status=VerificationStatus.SUCCESS, fingerprint="cd" * 32),
        )
        await plane.report_status(AGENT, "job-3", JobStatus.FAILED, error="reload failed")
        (target,) = await plane.targets(AGENT)

    assert (item.type, item.target and item.target.config["secret"]) == (
        JobType.DEPLOYMENT,
        {"token": "t"},
    )
    assert issued.id == "ver-1"
    assert issued.not_after.isoformat() == "2026-04-01T00:00:00+00:00"
    assert material.cert_pem == version.cert_pem.decode()
    assert target.type == "File"
    assert {r.headers["Authorization"] for r in recorder.requests} == {"Bearer key-7"}
    sent = {(r.method, r.url.path): r.content for r in recorder.requests}
    assert json.loads(sent["POST", "/api/v1/agents/agent-7/heartbeat"]) == {
        "hostname": "web-01",
        "architecture": "x86_64",
    }
    assert json.loads(sent["POST", "/api/v1/agents/agent-7/csr"]) == {
        "job_id": "job-1",
        "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----",
    }
    assert json.loads(sent["POST", "/api/v1/agents/agent-7/jobs/job-2/status"]) == {
        "status": "Completed",
        "verification": {"status": "Success", "fingerprint": "cd" * 32, "error": None},
    }
    assert json.loads(sent["POST", "/api/v1/agents/agent-7/jobs/job-3/status"]) == {
        "status": "Failed",
        "error": "reload failed",
    }


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, Unauthorized),
        (403, NotThisAgents),
        (410, AgentRetired),
        (409, ControlPlaneError),
        (503, ControlPlaneError),
    ],
)
async def test_error_bodies_become_typed_errors_with_their_message(
    status: int, kind: type[ControlPlaneError]
) -> None:
    body = {
        "error": "some_code",
        "message": "job job-7 belongs to another agent.",
        "request_id": "r",
    }
    recorder = Recorder({("GET", "/api/v1/agents/agent-7/work"): (status, body)})
    async with client(recorder) as plane:
        with pytest.raises(kind) as failure:
            await plane.work(AGENT)
    assert type(failure.value) is kind
    assert str(failure.value) == "job job-7 belongs to another agent."
    assert (failure.value.status, failure.value.code) == (status, "some_code")


async def test_ids_cannot_escape_their_path_segment() -> None:
    recorder = Recorder()
    async with client(recorder) as plane:
        await plane.report_status(AGENT, "../../register?x=1", JobStatus.FAILED, error="e")
    (request,) = recorder.requests
    assert request.url.raw_path == b"/api/v1/agents/agent-7/jobs/..%2F..%2Fregister%3Fx%3D1/status"


async def test_an_error_without_a_json_body_names_the_call() -> None:
    recorder = Recorder({("GET", "/api/v1/agents/agent-7/targets"): (502, "Bad Gateway")})
    async with client(recorder) as plane:
        with pytest.raises(ControlPlaneError, match="GET /agents/agent-7/targets answered 502"):
            await plane.targets(AGENT)


async def test_a_body_of_the_wrong_shape_is_an_error() -> None:
    recorder = Recorder({("GET", "/api/v1/agents/agent-7/work"): (200, {"jobs": [{"job": 1}]})})
    async with client(recorder) as plane:
        with pytest.raises(ControlPlaneError, match="unexpected body") as failure:
            await plane.work(AGENT)
    assert failure.value.code == "bad_response"


async def test_an_unreachable_server_is_an_error_without_a_status() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with HttpControlPlane(URL, transport=httpx.MockTransport(refuse)) as plane:
        with pytest.raises(ControlPlaneError, match="cannot reach the control plane") as failure:
            await plane.work(AGENT)
    assert failure.value.status is None


# -- real TLS: a local HTTPS listener ----------------------------------------------------------


async def serve_json(
    nursery: trio.Nursery, tmp_path: Path, body: dict[str, Any], *, max_tls: ssl.TLSVersion
) -> tuple[int, Path]:
    """An HTTPS listener on 127.0.0.1 answering every request with ``body``; returns its
    port and the CA bundle that trusts it (certificate for ``localhost``)."""
    issuer = ScratchCA("agent tls")
    served = issuer.issue("localhost")
    (tmp_path / "server.pem").write_bytes(served.fullchain)
    (tmp_path / "server.key").write_bytes(served.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.maximum_version = max_tls
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    payload = json.dumps(body).encode()

    async def answer(stream: trio.SSLStream[trio.SocketStream]) -> None:
        request = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while b"\r\n\r\n" not in request:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                request += chunk
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await stream.aclose()

    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, answer, 0, context, host="127.0.0.1")
    )
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(certificates_pem([issuer.root]))
    return listeners[0].transport_listener.socket.getsockname()[1], bundle


async def test_a_tls_1_3_server_signed_by_the_bundle_ca_is_trusted(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        port, bundle = await serve_json(
            nursery, tmp_path, {"count": 0, "jobs": []}, max_tls=ssl.TLSVersion.TLSv1_3
        )
        async with HttpControlPlane(f"https://localhost:{port}", ca_bundle=bundle) as plane:
            assert (await plane.work(AGENT)).jobs == ()
        nursery.cancel_scope.cancel()


async def test_a_server_the_bundle_does_not_cover_is_refused(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        port, bundle = await serve_json(nursery, tmp_path, {}, max_tls=ssl.TLSVersion.TLSv1_3)
        async with HttpControlPlane(f"https://localhost:{port}") as plane:
            with pytest.raises(ControlPlaneError, match="set CERTCTL_SERVER_CA_BUNDLE_PATH"):
                await plane.work(AGENT)
        async with HttpControlPlane(f"https://127.0.0.1:{port}", ca_bundle=bundle) as plane:
            with pytest.raises(
                ControlPlaneError, match=r"does not name that host.*set CERTCTL_SERVER_URL"
            ):
                await plane.work(AGENT)
        nursery.cancel_scope.cancel()


async def test_a_server_offering_only_tls_1_2_is_refused(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        port, bundle = await serve_json(nursery, tmp_path, {}, max_tls=ssl.TLSVersion.TLSv1_2)
        async with HttpControlPlane(f"https://localhost:{port}", ca_bundle=bundle) as plane:
            with pytest.raises(ControlPlaneError, match=r"answers TLS 1\.3") as no:
                await plane.work(AGENT)
        assert no.value.status is None
        nursery.cancel_scope.cancel()
