"""Connectors against the real servers: deploy, reject, roll back, skip, never drop a client.

Every assertion about what a server serves comes from ``Sidecar.served`` (a stdlib
handshake, and STARTTLS for the mail servers), never from the connector's own verifier.
Each test gets a fresh server serving ``old``; ``new`` is what the test deploys.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from certctl.connectors.targets.base import Material, sample_material
from certctl.connectors.targets.registry import AnyConnector, load_connector
from certctl.deploy import Engine, ReloadFailed, Result, ValidateFailed, VerifyFailed
from certctl.pki.pem import fingerprint_sha256
from certctl.testing.hookwrap import wrap
from certctl.testing.material import ScratchCA
from certctl.testing.sidecars.launchers import docker_engine_answers, launch
from certctl.testing.sidecars.probes import decoy_tls_server, served_leaf
from certctl.testing.sidecars.servers import Sidecar, SidecarUnavailable

pytestmark = pytest.mark.sidecar

LIVE = ["nginx", "haproxy", "apache", "caddy", "postfix", "dovecot"]
# No reload or validate command of their own (they watch their files), and no package
# here: these run only where a Docker engine answers, in their official images.
WATCHERS = ["traefik", "envoy"] if docker_engine_answers() else []
ZERO_DOWNTIME_DEPLOYS = 200


@pytest.fixture(scope="module")
def issuer() -> ScratchCA:
    return ScratchCA("certctl sidecar test")


@pytest.fixture
def old(issuer: ScratchCA) -> Material:
    return issuer.issue("localhost")


@pytest.fixture
def new(issuer: ScratchCA) -> Material:
    return issuer.issue("localhost")


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(str(tmp_path / "state"))


def _start(name: str, material: Material) -> Iterator[Sidecar]:
    try:
        with launch(name, material.cert_pem, material.chain_pem, material.key_pem) as sidecar:
            yield sidecar
    except SidecarUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(params=LIVE)
def sidecar(request: pytest.FixtureRequest, old: Material) -> Iterator[Sidecar]:
    yield from _start(request.param, old)


@pytest.fixture(params=LIVE + WATCHERS)
def any_sidecar(request: pytest.FixtureRequest, old: Material) -> Iterator[Sidecar]:
    yield from _start(request.param, old)


def connector(sidecar: Sidecar, **overrides: object) -> AnyConnector:
    return load_connector(sidecar.server.target_type, sidecar.target_config(**overrides))


def fingerprint(material: Material) -> str:
    return fingerprint_sha256(material.leaf())


def assert_serves(sidecar: Sidecar, material: Material) -> None:
    """The leaf on the implicit-TLS port, and on the STARTTLS port where there is one.

    Polls: after a rollback the server's reload is asynchronous (NGINX's old workers,
    Postfix's idle smtpd processes) and catches up within moments.
    """
    sidecar.wait_served(fingerprint(material))
    if sidecar.starttls_endpoint is not None:
        sidecar.wait_served(fingerprint(material), starttls=True)


def live_bytes(sidecar: Sidecar) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sidecar.cert_paths()}


def planned_bytes(sidecar: Sidecar, material: Material) -> dict[Path, bytes]:
    plan = connector(sidecar).plan(material.cert_pem, material.chain_pem, material.key_pem)
    return {Path(f.path): f.data for f in plan.files}


async def deploy(target: AnyConnector, engine: Engine, material: Material) -> Result:
    return await target.deploy(engine, material.cert_pem, material.chain_pem, material.key_pem)


async def test_deploy_serves_the_new_leaf(
    any_sidecar: Sidecar, engine: Engine, old: Material, new: Material
) -> None:
    sidecar = any_sidecar
    assert_serves(sidecar, old)
    result = await deploy(connector(sidecar), engine, new)
    assert result.validated
    assert result.reloaded == (sidecar.name not in WATCHERS)
    assert result.verification is not None
    assert result.verification.fingerprint == fingerprint(new)
    assert_serves(sidecar, new)
    assert live_bytes(sidecar) == planned_bytes(sidecar, new)


async def test_rejected_config_changes_nothing(
    sidecar: Sidecar, engine: Engine, old: Material, new: Material
) -> None:
    before = live_bytes(sidecar)
    sidecar.break_config()
    with pytest.raises(ValidateFailed, match="validate command failed") as failure:
        await deploy(connector(sidecar), engine, new)
    assert failure.value.result is not None
    assert not failure.value.result.reloaded
    assert live_bytes(sidecar) == before
    assert_serves(sidecar, old)


async def test_failed_reload_rolls_back(
    sidecar: Sidecar, engine: Engine, old: Material, new: Material, tmp_path: Path
) -> None:
    """The first reload really loads the new files, then reports failure: the rollback's
    reload must bring the old leaf back."""
    record = tmp_path / "reloads"
    flaky = wrap(sidecar.reload_argv, str(record), fail_once=str(tmp_path / "failed"))
    before = live_bytes(sidecar)
    with pytest.raises(ReloadFailed) as failure:
        await deploy(connector(sidecar, reload_command=list(flaky)), engine, new)
    assert failure.value.result is not None
    assert failure.value.result.rolled_back
    assert len(record.read_text().splitlines()) == 2  # the failed reload, then the restore's
    assert live_bytes(sidecar) == before
    assert_serves(sidecar, old)


async def test_verify_mismatch_rolls_back(
    any_sidecar: Sidecar, engine: Engine, issuer: ScratchCA, old: Material, new: Material
) -> None:
    sidecar = any_sidecar
    other = issuer.issue("localhost")
    before = live_bytes(sidecar)
    async with decoy_tls_server(other.cert_pem, other.key_pem) as decoy:
        verify = {"endpoint": f"{decoy.host}:{decoy.port}", "attempts": 2, "backoff": "50ms"}
        target = connector(sidecar, post_deploy_verify=verify)
        with pytest.raises(VerifyFailed, match=fingerprint(other)) as failure:
            await deploy(target, engine, new)
    assert failure.value.result is not None
    assert failure.value.result.rolled_back
    assert live_bytes(sidecar) == before
    assert_serves(sidecar, old)


async def test_identical_redeploy_is_skipped_without_reload(
    sidecar: Sidecar, engine: Engine, new: Material, tmp_path: Path
) -> None:
    record = tmp_path / "reloads"
    target = connector(sidecar, reload_command=list(wrap(sidecar.reload_argv, str(record))))
    first = await deploy(target, engine, new)
    second = await deploy(target, engine, new)
    assert not first.skipped_as_idempotent
    assert second.skipped_as_idempotent
    assert not second.reloaded
    assert len(record.read_text().splitlines()) == 1
    assert_serves(sidecar, new)


@pytest.fixture
def caddy(old: Material) -> Iterator[Sidecar]:
    yield from _start("caddy", old)


async def test_caddy_api_mode_reloads_through_the_admin_api(
    caddy: Sidecar, engine: Engine, new: Material
) -> None:
    admin = f"http://{caddy.endpoint.host}:{caddy.ports['admin']}"
    target = connector(
        caddy, mode="api", admin_api=admin, reload_command=None, validate_command=None
    )
    assert "caddy_admin" in " ".join(target.plan(b"", b"", b"").reload or ())
    result = await deploy(target, engine, new)
    assert result.reloaded
    assert_serves(caddy, new)


async def test_caddy_api_unreachable_fails_closed(
    caddy: Sidecar, engine: Engine, old: Material, new: Material
) -> None:
    """No silent fallback: files stay as they were and the old leaf is served."""
    before = live_bytes(caddy)
    target = connector(
        caddy,
        mode="api",
        admin_api="http://127.0.0.1:9",
        reload_command=None,
        validate_command=None,
    )
    with pytest.raises(ValidateFailed, match="unreachable"):
        await deploy(target, engine, new)
    assert live_bytes(caddy) == before
    assert_serves(caddy, old)


PROBED = ["nginx", "haproxy", "caddy"]


@pytest.fixture(params=PROBED)
def probed(request: pytest.FixtureRequest, old: Material) -> Iterator[Sidecar]:
    yield from _start(request.param, old)


async def test_dry_run_checks_staged_files_and_changes_nothing(
    probed: Sidecar, new: Material, old: Material, tmp_path: Path
) -> None:
    record = tmp_path / "reloads"
    target = connector(probed, reload_command=list(wrap(probed.reload_argv, str(record))))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in probed.cert_dir.iterdir()}
    assert set(before) == set(probed.cert_paths())
    dry = await target.validate_only(new.cert_pem, new.chain_pem, new.key_pem)
    probe, validate = (check.argv for check in dry.checks)
    assert probe[0] == probed.server.binary
    assert validate == probed.validate_argv
    assert not dry.notes
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in probed.cert_dir.iterdir()} == before
    assert not record.exists()
    assert_serves(probed, old)


@pytest.fixture(params=["nginx", "haproxy"])
def strict_tls(request: pytest.FixtureRequest, old: Material) -> Iterator[Sidecar]:
    yield from _start(request.param, old)


async def test_dry_run_probe_catches_what_the_in_process_check_cannot(
    strict_tls: Sidecar, weak_rsa: Material
) -> None:
    """RSA-1024 parses, matches and is unexpired, but the server's TLS library (OpenSSL
    at security level 2) refuses it; only loading it in the server itself shows that."""
    target = connector(strict_tls)
    with pytest.raises(ValidateFailed, match=r"(?s)probe-.*certificate"):
        await target.validate_only(weak_rsa.cert_pem, weak_rsa.chain_pem, weak_rsa.key_pem)


@pytest.fixture(scope="module")
def weak_rsa() -> Material:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    sample = sample_material("localhost", key=key)
    return Material(sample.cert_pem, b"", sample.key_pem)


@pytest.fixture(params=["nginx", "haproxy"])
def busy(request: pytest.FixtureRequest, old: Material) -> Iterator[Sidecar]:
    yield from _start(request.param, old)


def _public_key(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def test_zero_downtime_under_continuous_handshakes(
    busy: Sidecar, engine: Engine, issuer: ScratchCA, old: Material
) -> None:
    """200 consecutive deploys while a client handshakes in a loop: no handshake fails,
    and every served leaf carries the key of a version that was deployed."""
    versions = [issuer.issue("localhost") for _ in range(ZERO_DOWNTIME_DEPLOYS)]
    deployed_keys = {_public_key(m.leaf()) for m in [old, *versions]}
    served: list[x509.Certificate] = []
    failures: list[str] = []
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            try:
                served.append(served_leaf(busy.endpoint, timeout=5.0))
            except OSError as exc:
                failures.append(repr(exc))

    target = connector(busy)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, client)
        try:
            for version in versions:
                result = await deploy(target, engine, version)
                assert result.verification is not None
        finally:
            done.set()
    assert failures == []
    assert len(served) >= ZERO_DOWNTIME_DEPLOYS
    assert {_public_key(leaf) for leaf in served} <= deployed_keys
    assert fingerprint_sha256(busy.served()) == fingerprint(versions[-1])
