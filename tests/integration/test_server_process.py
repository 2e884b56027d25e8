"""``certctl server`` as operators run it: a child process on PostgreSQL, spoken to over
real HTTPS from outside. What the in-process API tests cannot show: TLS 1.3 only on the
wire, nothing for plaintext, 401 on every route of the published schema, 413 from the
real listener, and SIGHUP swapping the certificate of the running process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest_store import Cluster
from cryptography import x509

from certctl.pki.pem import fingerprint_sha256, load_certificates
from certctl.testing.server import ServerProcess, control_plane

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="openssl is not installed; install it with `apt-get install openssl`"
)
PUBLIC = {"/health", "/ready", "/.well-known/pki/crl/{issuer_id}"}


@pytest.fixture(scope="module")
def database(pg_cluster: Cluster) -> Iterator[str]:
    name = pg_cluster.create_database()
    yield pg_cluster.dsn(name)
    pg_cluster.drop_database(name)


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("server")
    # Tests here present wrong credentials route by route; throttling has its own module.
    extra = {"CERTCTL_MAX_BODY_SIZE": "65536", "CERTCTL_AUTH_FAILURE_BURST": "100000"}
    with control_plane(workdir, database_url=database, extra_env=extra) as running:
        yield running


def _openssl(server: ServerProcess, version: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [OPENSSL or "openssl", "s_client", version, "-connect", f"127.0.0.1:{server.port}",
         "-CAfile", str(server.ca_path), "-verify_return_error", "-brief"],
        input=b"", capture_output=True, timeout=20, check=False,
    )  # fmt: skip


@needs_openssl
def test_tls13_succeeds_and_tls12_fails(server: ServerProcess) -> None:
    ok = _openssl(server, "-tls1_3")
    assert ok.returncode == 0, ok.stderr
    assert b"TLSv1.3" in ok.stdout + ok.stderr
    refused = _openssl(server, "-tls1_2")
    assert refused.returncode != 0


def test_plaintext_http_gets_no_http_response(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"HTTP/" not in received


def test_probes_answer_without_auth(server: ServerProcess) -> None:
    with server.client(key="") as client:
        assert client.get("/health").json() == {"status": "healthy"}
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"


def test_every_other_route_answers_401_without_a_key(server: ServerProcess) -> None:
    with server.client() as operator:
        spec = operator.get("/api/v1/openapi.json").json()
    routes = [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "delete", "patch"}
    ]
    routes += [("GET", "/metrics"), ("GET", "/api/v1/openapi.json"), ("GET", "/nowhere")]
    checked = 0
    with server.client(key="") as anonymous, server.client(key="not-a-key") as stranger:
        for method, path in routes:
            if path in PUBLIC:
                continue
            concrete = path.replace("{", "").replace("}", "")
            for client in (anonymous, stranger):
                response = client.request(method, concrete)
                assert response.status_code == 401, (method, path, response.text)
                body = response.json()
                assert set(body) == {"error", "message", "request_id"}
                assert body["request_id"] == response.headers["X-Request-ID"]
                checked += 1
    assert checked >= 2 * 40


def test_oversized_body_gets_413_with_json(server: ServerProcess) -> None:
    with server.client() as client:
        response = client.post(
            "/api/v1/certificates",
            content=b'{"name": "' + b"x" * 70_000 + b'"}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_an_oversized_http2_upload_ends_that_stream_not_the_server(server: ServerProcess) -> None:
    """The client keeps sending DATA after the 413: hypercorn's HTTP/2 code raised on it
    and took the whole server down, until connections were isolated."""
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    with httpx.Client(
        base_url=server.url, verify=server.ssl_context(), http2=True, timeout=30
    ) as client:
        for _ in range(3):
            with contextlib.suppress(httpx.TransportError):
                response = client.post(
                    "/api/v1/certificates", content=b"a" * 2_000_000, headers=headers
                )
                assert response.status_code == 413
                assert response.http_version == "HTTP/2"
    time.sleep(0.5)
    assert server.process.poll() is None, server.log()
    with server.client(key="") as client:
        assert client.get("/health").status_code == 200


def _served_fingerprint(server: ServerProcess) -> str:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        context = server.ssl_context()
        with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint_sha256(x509.load_der_x509_certificate(der))


def test_sighup_serves_replaced_certificate_without_restart(database: str, tmp_path: Path) -> None:
    with control_plane(tmp_path / "reload", database_url=database) as server:
        tls_dir = server.ca_path.parent
        before = _served_fingerprint(server)
        ca_before = server.ca_path.read_bytes()
        subprocess.run(
            [sys.executable, "-m", "certctl", "server", "init-tls", "--dir", str(tls_dir),
             "--force"],
            check=True, capture_output=True,
        )  # fmt: skip
        # The new pair has a new CA: trust both while the old one may still be served.
        server.ca_path.write_bytes(ca_before + server.ca_path.read_bytes())
        new = fingerprint_sha256(load_certificates((tls_dir / "server.pem").read_bytes())[0])
        assert new != before
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60  # against a hang; a loaded machine may be slow
        while _served_fingerprint(server) != new:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert server.process.poll() is None


def _leads(server: ServerProcess) -> bool:
    with server.client() as client:
        metrics = client.get("/metrics").text
    return "certctl_scheduler_leader 1.0" in metrics


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Until ``condition`` holds; the 120 s bound is against a hang, not a timing claim."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < 120, what
        time.sleep(0.1)


@pytest.fixture
def own_database(pg_cluster: Cluster) -> Iterator[str]:
    """A database no other server of this module uses: the module's server would lead it."""
    name = pg_cluster.create_database()
    yield pg_cluster.dsn(name)
    pg_cluster.drop_database(name)


def test_two_servers_on_one_database_elect_one_scheduler(own_database: str, tmp_path: Path) -> None:
    """The scheduler loops run in exactly one process; the other takes over when the leader
    stops (at its next election, every 5 s; the wait is bounded against a hang only)."""
    with (
        control_plane(tmp_path / "a", database_url=own_database, name="a") as first,
        control_plane(tmp_path / "b", database_url=own_database, name="b") as second,
    ):
        servers = (first, second)
        _wait_for(lambda: any(map(_leads, servers)), "no server became leader")
        for _ in range(20):
            assert [_leads(s) for s in servers].count(True) == 1
            time.sleep(0.05)
        leader, follower = servers if _leads(first) else servers[::-1]
        assert leader.stop() == 0
        _wait_for(lambda: _leads(follower), "the follower did not take over")
