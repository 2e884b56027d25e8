"""The HTTPS listener for real: TLS 1.3 only, nothing for plaintext, SIGHUP reloads into
the live context, worker processes share the socket, and `certctl server` refuses bad
material with one line before it touches the database.

Runs at the real time, because openssl verifies at the real time.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
from cryptography import x509
from quart_trio import QuartTrio
from structlog.testing import capture_logs

from certctl import config
from certctl.core.clock import SystemClock
from certctl.pki.keys import generate_key, private_key_pem
from certctl.pki.pem import fingerprint_sha256, load_certificates
from certctl.server.listener import bind_sockets, run_workers, serve, watch_sighup
from certctl.server.tls import CERT_VAR, KEY_VAR, ReloadableTLS, TLSBootstrap, init_tls

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(
    OPENSSL is None,
    reason="openssl is not installed; install it with `apt-get install openssl`",
)

# Values that pass `config.validate` for the server; never real secrets.
SERVER_ENV = {
    "CERTCTL_API_KEYS": "admin:integration-api-key-0123456789abcdef:admin",
    "CERTCTL_AGENT_BOOTSTRAP_TOKEN": "integration-bootstrap-token-0123456789",
    "CERTCTL_CONFIG_ENCRYPTION_KEY": "integration encryption key, comfortably over 32 bytes",
}


def health_app() -> QuartTrio:
    app = QuartTrio(__name__)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


@dataclass
class Running:
    port: int
    material: TLSBootstrap


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    """``serve`` and ``watch_sighup`` in this process, on a free port of 127.0.0.1; on
    teardown ``serve`` must return by itself once its shutdown trigger fires."""
    material = init_tls(tmp_path / "tls", hosts=(), force=False, now=datetime.now(UTC))
    settings = replace(config.load({}), server_host="127.0.0.1", server_port=0)
    tls = ReloadableTLS(material.cert_path, material.key_path, "127.0.0.1", datetime.now(UTC))
    sockets = bind_sockets(settings)
    stop, stopped = trio.Event(), trio.Event()

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(
            health_app(),
            settings,
            tls,
            shutdown_trigger=stop.wait,
            task_status=task_status,
            sockets=sockets,
        )
        stopped.set()

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_sighup, tls, SystemClock())
            binds = await nursery.start(run)
            port = sockets[0].getsockname()[1]
            assert binds == [f"https://127.0.0.1:{port}"]
            yield Running(port, material)
            stop.set()
            with trio.fail_after(60):  # against a hang only
                await stopped.wait()
            nursery.cancel_scope.cancel()  # watch_sighup runs for ever
    finally:
        for sock in sockets:
            sock.close()


async def openssl(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [OPENSSL or "openssl", *map(str, args)],
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def served_fingerprint(port: int) -> str:
    """A fresh handshake's leaf, unverified: the point is which certificate is served."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=context)
    try:
        await stream.do_handshake()
        der = stream.getpeercert(binary_form=True)
    finally:
        await stream.aclose()
    assert der is not None
    return fingerprint_sha256(x509.load_der_x509_certificate(der))


def leaf_fingerprint(cert_path: Path) -> str:
    return fingerprint_sha256(load_certificates(cert_path.read_bytes())[0])


# --------------------------------------------------------------------------- protocol


@needs_openssl
async def test_tls13_handshake_verifies_and_tls12_is_refused(server: Running) -> None:
    address = f"127.0.0.1:{server.port}"
    tls13 = await openssl(
        "s_client",
        "-connect",
        address,
        "-tls1_3",
        "-CAfile",
        server.material.ca_path,
        "-verify_return_error",
        "-verify_ip",
        "127.0.0.1",
    )
    assert tls13.returncode == 0, tls13.stderr.decode()
    assert b"TLSv1.3" in tls13.stdout
    assert b"Verify return code: 0 (ok)" in tls13.stdout
    tls12 = await openssl("s_client", "-connect", address, "-tls1_2")
    assert tls12.returncode != 0
    assert b"no peer certificate available" in tls12.stdout


@needs_openssl
async def test_alpn_offers_h2(server: Running) -> None:
    result = await openssl(
        "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_3", "-alpn", "h2,http/1.1"
    )
    assert b"ALPN protocol: h2" in result.stdout


async def test_https_health_answers(server: Running) -> None:
    context = ssl.create_default_context(cafile=str(server.material.ca_path))
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", server.port, ssl_context=context, https_compatible=True
    )
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    response = await _read_all(stream)
    assert response.startswith(b"HTTP/1.1 200")
    assert b'"status":"ok"' in response


async def test_serve_binds_the_configured_address_without_sockets(tmp_path: Path) -> None:
    material = init_tls(tmp_path, hosts=(), force=False, now=datetime.now(UTC))
    tls = ReloadableTLS(material.cert_path, material.key_path, "127.0.0.1", datetime.now(UTC))
    settings = replace(config.load({}), server_host="127.0.0.1", server_port=0)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(serve, health_app(), settings, tls, shutdown_trigger=stop.wait)
        )
        port = int(binds[0].rsplit(":", 1)[1])
        assert await served_fingerprint(port) == leaf_fingerprint(material.cert_path)
        stop.set()


async def test_plaintext_http_gets_no_http_response(server: Running) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    received = await _read_all(stream)
    assert b"HTTP/" not in received


async def _read_all(stream: trio.abc.Stream) -> bytes:
    received = b""
    with trio.fail_after(60):  # against a hang only
        try:
            while chunk := await stream.receive_some():
                received += chunk
        except trio.BrokenResourceError:
            pass
    await stream.aclose()
    return received


# --------------------------------------------------------------------------- SIGHUP


async def wait_until_served(port: int, fingerprint: str) -> None:
    with trio.fail_after(60):  # against a hang only
        while await served_fingerprint(port) != fingerprint:
            await trio.sleep(0.02)


async def test_sighup_serves_a_new_pair_and_keeps_it_when_the_next_is_broken(
    server: Running, tmp_path: Path
) -> None:
    live = server.material
    assert await served_fingerprint(server.port) == leaf_fingerprint(live.cert_path)

    rotated = init_tls(tmp_path / "rotated", hosts=(), force=False, now=datetime.now(UTC))
    os.replace(rotated.key_path, live.key_path)
    os.replace(rotated.cert_path, live.cert_path)
    new = leaf_fingerprint(live.cert_path)
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_until_served(server.port, new)

    live.key_path.write_bytes(private_key_pem(generate_key()))  # a key of no certificate
    with capture_logs() as logs:
        os.kill(os.getpid(), signal.SIGHUP)
        with trio.fail_after(60):  # against a hang only
            while not logs:
                await trio.sleep(0.02)
    assert logs[0]["log_level"] == "error"
    assert logs[0]["variable"] == KEY_VAR
    assert await served_fingerprint(server.port) == new


# --------------------------------------------------------------------------- workers


def _report_and_wait(directory: Path, sockets: list[socket.socket]) -> None:
    """A stand-in worker: says which port it inherited, then stops cleanly on SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = sockets[0].getsockname()[1]
    # Written aside and renamed: the test may look between the create and the write.
    report = directory / f"{os.getpid()}.port"
    report.with_suffix(".tmp").write_text(str(port))
    report.with_suffix(".tmp").rename(report)
    while True:
        time.sleep(0.05)


def _first_crashes(sockets: list[socket.socket]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if multiprocessing.current_process().name == "certctl-worker-1":
        sys.exit(3)
    while True:
        time.sleep(0.05)


def test_a_crashed_worker_stops_the_others() -> None:
    settings = replace(config.load({}), server_port=0, server_workers=2)
    assert run_workers(settings, _first_crashes) == 1


def test_workers_share_the_socket_and_stop_on_sigterm(tmp_path: Path) -> None:
    settings = replace(config.load({}), server_port=0, server_workers=2)

    def stop_when_both_report() -> None:
        # A bound against a hang only (workers that never start): a slow machine must not
        # turn into a stop before both have reported.
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*.port"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_when_both_report)
    handlers = [signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)]
    stopper.start()
    status = run_workers(settings, functools.partial(_report_and_wait, tmp_path))
    stopper.join()
    reports = list(tmp_path.glob("*.port"))
    assert len(reports) == 2
    assert len({path.read_text() for path in reports}) == 1
    assert status == 0
    assert [signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)] == handlers


# --------------------------------------------------------------------------- certctl server


def _env_file(tmp_path: Path, **tls: Path) -> Path:
    lines = {
        **SERVER_ENV,
        "CERTCTL_SERVER_HOST": "127.0.0.1",
        # Never reached: the TLS refusal must come before any database work.
        "CERTCTL_DATABASE_URL": "postgresql://certctl:unused@127.0.0.1:9/certctl",
        "CERTCTL_DATA_DIR": str(tmp_path / "data"),
    }
    lines.update({name: str(path) for name, path in tls.items()})
    env_file = tmp_path / "server.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
    return env_file


def _certctl_server(env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CERTCTL_")}
    return subprocess.run(
        [sys.executable, "-m", "certctl", "server", "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def _expired_pair(directory: Path) -> tuple[Path, Path]:
    made = init_tls(directory, hosts=(), force=False, now=datetime.now(UTC) - timedelta(days=400))
    return made.cert_path, made.key_path


@pytest.mark.parametrize("case", ["missing cert path", "mismatched key", "expired cert"])
def test_certctl_server_refuses_bad_tls_with_one_line(tmp_path: Path, case: str) -> None:
    good = init_tls(tmp_path / "good", hosts=(), force=False, now=datetime.now(UTC))
    other = init_tls(tmp_path / "other", hosts=(), force=False, now=datetime.now(UTC))
    if case == "missing cert path":
        env_file, variable = (
            _env_file(tmp_path, CERTCTL_SERVER_TLS_KEY_PATH=good.key_path),
            CERT_VAR,
        )
    elif case == "mismatched key":
        env_file, variable = (
            _env_file(
                tmp_path,
                CERTCTL_SERVER_TLS_CERT_PATH=good.cert_path,
                CERTCTL_SERVER_TLS_KEY_PATH=other.key_path,
            ),
            KEY_VAR,
        )
    else:
        cert, key = _expired_pair(tmp_path / "expired")
        env_file, variable = (
            _env_file(tmp_path, CERTCTL_SERVER_TLS_CERT_PATH=cert, CERTCTL_SERVER_TLS_KEY_PATH=key),
            CERT_VAR,
        )
    result = _certctl_server(env_file)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"certctl: {variable}")
    assert not (tmp_path / "data").exists()


def test_certctl_server_refuses_unsafe_config_with_exit_2(tmp_path: Path) -> None:
    good = init_tls(tmp_path / "good", hosts=(), force=False, now=datetime.now(UTC))
    env_file = _env_file(
        tmp_path,
        CERTCTL_SERVER_TLS_CERT_PATH=good.cert_path,
        CERTCTL_SERVER_TLS_KEY_PATH=good.key_path,
    )
    env_file.write_text(env_file.read_text() + "CERTCTL_API_KEYS=\n")
    result = _certctl_server(env_file)
    assert result.returncode == 2
    assert result.stderr.startswith("certctl: CERTCTL_API_KEYS")
