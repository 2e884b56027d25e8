"""``certctl healthcheck`` as an image's HEALTHCHECK runs it: a child process, its exit
status and its one line, against a real server and a real agent."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_store import Cluster
from waiting import wait_for

from certctl.testing import processes
from certctl.testing.server import ServerProcess, control_plane, start_certctl, write_env


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certctl", "healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def database(pg_cluster: Cluster) -> Iterator[str]:
    name = pg_cluster.create_database()
    yield name
    pg_cluster.drop_database(name)


@pytest.fixture(scope="module")
def server(
    pg_cluster: Cluster, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("healthcheck")
    with control_plane(workdir, database_url=pg_cluster.dsn(database)) as running:
        yield running


def test_a_healthy_server_passes_with_its_ca_and_on_loopback_without(
    server: ServerProcess,
) -> None:
    trusted = probe("--url", server.url, "--cacert", str(server.ca_path))
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.startswith("healthy:")
    loopback = probe("--url", server.url, "--insecure-localhost")
    assert loopback.returncode == 0, loopback.stderr
    # The port comes from the server's own env file when no URL is given.
    from_env = probe("--env-file", str(server.env_file), "--cacert", str(server.ca_path))
    assert from_env.returncode == 0, from_env.stderr


def test_an_untrusted_certificate_is_unhealthy_not_skipped(server: ServerProcess) -> None:
    # The system trust store does not know the server's own CA.
    untrusted = probe("--url", server.url)
    assert untrusted.returncode == 1
    assert "--cacert" in untrusted.stderr
    assert len(untrusted.stderr.strip().splitlines()) == 1


def test_a_server_whose_database_is_gone_is_not_ready(
    server: ServerProcess, pg_cluster: Cluster, database: str
) -> None:
    args = ("--url", server.url, "--cacert", str(server.ca_path))
    pg_cluster.run(
        "postgres",
        f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'",
    )
    try:
        down = wait_for(lambda: (p := probe(*args)).returncode != 0 and p, 120, "/ready to fail")
        assert down.returncode == 1
        assert f"{server.url}/ready answered 503" in down.stderr
        assert len(down.stderr.strip().splitlines()) == 1
    finally:
        pg_cluster.run("postgres", f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    wait_for(lambda: probe(*args).returncode == 0, 120, "/ready to recover")


def test_a_stopped_server_is_unhealthy() -> None:
    closed = probe("--url", f"https://127.0.0.1:{processes.free_port()}", "--insecure-localhost")
    assert closed.returncode == 1
    assert "refused the connection" in closed.stderr
    assert len(closed.stderr.strip().splitlines()) == 1


@pytest.fixture
def plaintext_port() -> Iterator[int]:
    """An HTTP server that says 200 to everything: what the probe must not call healthy."""

    class Always200(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status":"healthy"}')

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Always200)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


def test_a_plaintext_port_is_unhealthy_and_an_http_url_is_refused(plaintext_port: int) -> None:
    answered = probe("--url", f"https://127.0.0.1:{plaintext_port}", "--insecure-localhost")
    assert answered.returncode == 1
    assert "plaintext" in answered.stderr
    assert len(answered.stderr.strip().splitlines()) == 1
    refused = probe("--url", f"http://127.0.0.1:{plaintext_port}", "--insecure-localhost")
    assert refused.returncode == 2
    assert "https://" in refused.stderr


def test_insecure_is_refused_for_a_host_that_is_not_loopback() -> None:
    refused = probe("--url", "https://certctl.example.test:8443", "--insecure-localhost")
    assert refused.returncode == 2
    assert "loopback" in refused.stderr


def test_the_agent_is_healthy_while_it_runs_and_unhealthy_once_it_stops(
    server: ServerProcess, tmp_path: Path
) -> None:
    state = tmp_path / "agent-state"
    env_file = write_env(
        tmp_path / "agent.env",
        {
            "CERTCTL_SERVER_URL": server.url,
            "CERTCTL_SERVER_CA_BUNDLE_PATH": str(server.ca_path),
            "CERTCTL_AGENT_BOOTSTRAP_TOKEN": server.bootstrap_token,
            "CERTCTL_AGENT_STATE_DIR": str(state),
            "CERTCTL_AGENT_HEARTBEAT_INTERVAL": "1s",
            "CERTCTL_DATA_DIR": str(tmp_path / "data"),
        },
    )
    args = ("--role", "agent", "--env-file", str(env_file))
    before = probe(*args)
    assert before.returncode == 1
    assert "has not run a heartbeat" in before.stderr
    agent = start_certctl("agent", env_file, tmp_path / "agent.log", name="agent")
    try:
        wait_for(lambda: probe(*args).returncode == 0, 60, "the agent's first heartbeat")
    finally:
        processes.stop_process(agent.process, 30)
    stopped = probe(*args)
    assert stopped.returncode == 1
    assert "is not running" in stopped.stderr
