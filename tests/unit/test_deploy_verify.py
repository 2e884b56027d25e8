"""Post-deploy verification against a real TLS server on 127.0.0.1 (trio, real handshakes)."""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from certctl.connectors.targets.base import Material
from certctl.core.backoff import Backoff
from certctl.deploy import Endpoint, Engine, File, FileRole, Plan, TLSVerifier, VerifyFailed
from certctl.pki.pem import fingerprint_sha256
from certctl.testing.faults import ScriptedRunner
from certctl.testing.material import ScratchCA

ISSUER = ScratchCA()
SERVED = ISSUER.issue("served.example")
OTHER = ISSUER.issue("other.example")
FAST = Backoff(initial=0.05, cap=0.08)
RELOAD = ("reload-service",)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def write_pair(directory: Path, material: Material) -> tuple[Path, Path]:
    cert, key = directory / "served-cert.pem", directory / "served-key.pem"
    cert.write_bytes(material.fullchain)
    key.write_bytes(material.key_pem)
    return cert, key


class Server:
    """Counts handshakes and records the SNI names clients sent."""

    def __init__(self, context: ssl.SSLContext, pick: Callable[[], ssl.SSLContext] | None) -> None:
        self.handshakes = 0
        self.names: list[str | None] = []
        self._pick = pick

        def on_sni(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
            self.names.append(name)
            if self._pick is not None:
                sock.context = self._pick()

        context.sni_callback = on_sni  # type: ignore[assignment]
        self.context = context

    async def handle(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
            self.handshakes += 1
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def start(self, nursery: trio.Nursery) -> int:
        serve = functools.partial(trio.serve_ssl_over_tcp, host="127.0.0.1")
        listeners = await nursery.start(serve, self.handle, 0, self.context)
        return int(listeners[0].transport_listener.socket.getsockname()[1])


async def test_the_served_leaf_matches_and_the_result_describes_it(tmp_path: Path) -> None:
    server = Server(server_context(*write_pair(tmp_path, SERVED)), None)
    async with trio.open_nursery() as nursery:
        port = await server.start(nursery)
        endpoint = Endpoint("127.0.0.1", port, server_name="served.example")
        result = await TLSVerifier(endpoint, backoff=FAST).verify(SERVED.leaf())
        nursery.cancel_scope.cancel()
    assert result.fingerprint == fingerprint_sha256(SERVED.leaf())
    assert result.tls_version == "TLS 1.3"
    assert result.subject == "CN=served.example"
    assert result.not_after == SERVED.leaf().not_valid_after_utc
    assert (result.attempts, result.endpoint, result.server_name) == (
        1,
        f"127.0.0.1:{port}",
        "served.example",
    )
    assert server.names == ["served.example"]


async def test_a_mismatch_is_retried_with_backoff_then_fails(tmp_path: Path) -> None:
    server = Server(server_context(*write_pair(tmp_path, SERVED)), None)
    async with trio.open_nursery() as nursery:
        port = await server.start(nursery)
        started = time.monotonic()
        with pytest.raises(VerifyFailed, match="after 3 attempts, last: served SHA-256"):
            await TLSVerifier(Endpoint("localhost", port), backoff=FAST).verify(OTHER.leaf())
        elapsed = time.monotonic() - started
        nursery.cancel_scope.cancel()
    assert server.handshakes == 3
    assert server.names == ["localhost"] * 3  # SNI defaults to the host name
    assert elapsed >= 0.05 + 0.08  # waits of 0.05 s, then 0.1 s capped to 0.08 s


async def test_an_unreachable_endpoint_fails_after_its_attempts() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but never listening: connection refused
        verifier = TLSVerifier(Endpoint("127.0.0.1", port), attempts=2, backoff=FAST)
        with pytest.raises(VerifyFailed, match="after 2 attempts, last: handshake failed"):
            await verifier.verify(SERVED.leaf())


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TLSVerifier(Endpoint("localhost"), attempts=0)


def deploy_plan(site: Path, material: Material) -> Plan:
    return Plan(
        files=(
            File(str(site / "cert.pem"), material.fullchain, FileRole.FULLCHAIN),
            File(str(site / "key.pem"), material.key_pem, FileRole.KEY),
        ),
        reload=RELOAD,
    )


async def test_deploy_verifies_against_a_server_serving_the_live_files(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    live_cert, live_key = site / "cert.pem", site / "key.pem"

    def live() -> ssl.SSLContext:  # like a server that picked up the reloaded files
        return server_context(live_cert, live_key)

    server = Server(server_context(*write_pair(tmp_path, SERVED)), live)
    runner = ScriptedRunner()
    engine = Engine(str(tmp_path / "state"), runner=runner)
    async with trio.open_nursery() as nursery:
        port = await server.start(nursery)
        verifier = TLSVerifier(Endpoint("127.0.0.1", port, "served.example"), backoff=FAST)
        result = await engine.deploy(deploy_plan(site, OTHER), verifier)
        nursery.cancel_scope.cancel()
    assert result.verification is not None
    assert result.verification.fingerprint == fingerprint_sha256(OTHER.leaf())
    assert runner.calls == [RELOAD]


async def test_deploy_rolls_back_and_reloads_when_the_server_serves_something_else(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    runner = ScriptedRunner()
    engine = Engine(str(tmp_path / "state"), runner=runner)
    engine.apply(deploy_plan(site, SERVED))
    server = Server(server_context(*write_pair(tmp_path, SERVED)), None)  # never reloads
    async with trio.open_nursery() as nursery:
        port = await server.start(nursery)
        verifier = TLSVerifier(Endpoint("127.0.0.1", port, "served.example"), backoff=FAST)
        with pytest.raises(VerifyFailed, match="previous files are in place and reloaded"):
            await engine.deploy(deploy_plan(site, OTHER), verifier)
        nursery.cancel_scope.cancel()
    assert (site / "cert.pem").read_bytes() == SERVED.fullchain
    assert (site / "key.pem").read_bytes() == SERVED.key_pem
    assert runner.calls == [RELOAD, RELOAD, RELOAD]
