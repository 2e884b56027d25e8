"""Target connectors against real nginx and HAProxy: what a safe deploy costs over the floor.

A deploy to a live server cannot be faster than the server's own work: parse the config
(the validate command), reload, and start serving the new leaf. That floor is measured
directly in the same run, against the same server, with the same files: the validate
argv, then the reload argv, then TLS handshakes in a tight loop until the served leaf is
the new one. Ours is the full connector deploy through the engine (plan, material check,
journal, backups, fsyncs, atomic renames, validate, reload, post-deploy verify); the ratio
ours/floor is the price of doing it safely. A naive baseline (files copied in place, then
the reload argv, nothing checked or awaited) shows how fast an unsafe script would look.

Servers run as local processes (``certctl.testing.sidecars``, ``docker=False``) so that no
``docker exec`` sits in the reload path. Versions alternate so no deploy is skipped as
idempotent. Nothing here asserts on timing.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio
from cryptography import x509

from certctl.connectors.targets.base import Material
from certctl.connectors.targets.registry import AnyConnector, load_connector
from certctl.deploy import Command, Engine, Handshake, Plan, Result, Verifier
from certctl.pki.pem import fingerprint_sha256
from certctl.testing.material import ScratchCA
from certctl.testing.sidecars.launchers import launch
from certctl.testing.sidecars.servers import Sidecar, SidecarUnavailable

SERVERS = ("nginx", "haproxy")
ROUNDS = 40
WARMUP = 4  # even, so every phase starts on the version the previous one did not end on
VERSIONS = 2
SERVE_TIMEOUT = 10.0
TARGET = 1.5


@dataclass
class _Phase:
    """Latencies of one way of deploying, plus optional per-stage timings."""

    label: str
    samples: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    handshakes: list[int] = field(default_factory=list)  # floor only: polls until served

    def stage(self, name: str, seconds: float) -> None:
        self.stages.setdefault(name, []).append(seconds)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank: with 40 samples p99 is the slowest deploy, p95 the second slowest."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _figures(samples: Sequence[float]) -> tuple[float, float, float, float]:
    ordered = sorted(samples)
    rate = len(ordered) / sum(ordered)
    return statistics.median(ordered), _quantile(ordered, 0.95), _quantile(ordered, 0.99), rate


def _report(phase: _Phase) -> None:
    p50, p95, p99, rate = _figures(phase.samples)
    print(
        f"  {phase.label:<48} p50 {p50 * 1e3:7.1f} ms   p95 {p95 * 1e3:7.1f} ms   "
        f"p99 {p99 * 1e3:7.1f} ms   {rate:6.2f} deploys/s"
    )
    if phase.stages:
        parts = ", ".join(
            f"{name} {statistics.median(values) * 1e3:.1f}" for name, values in phase.stages.items()
        )
        print(f"  {'':<48} median stages (ms): {parts}")
    if phase.handshakes:
        print(
            f"  {'':<48} handshakes until the new leaf: median "
            f"{statistics.median(phase.handshakes):.0f}, max {max(phase.handshakes)}"
        )


def _run(argv: Command) -> None:
    subprocess.run(list(argv), check=True, stdin=subprocess.DEVNULL, capture_output=True)


def _write_naively(target: AnyConnector, version: Material) -> None:
    """The planned bytes written in place: no temp file, fsync, backup or journal."""
    for item in target.plan(version.cert_pem, version.chain_pem, version.key_pem).files:
        with open(item.path, "wb") as handle:
            handle.write(item.data)


class _Timed:
    """Passes verification through, noting when it started: splits ours into apply + verify."""

    def __init__(self, inner: Verifier, marks: list[float]) -> None:
        self._inner = inner
        self._marks = marks

    async def verify(self, leaf: x509.Certificate) -> Handshake:
        self._marks.append(time.perf_counter())
        return await self._inner.verify(leaf)


class _TimedEngine(Engine):
    """The engine unchanged except that the verifier it gets is wrapped in ``_Timed``."""

    def __init__(self, state_dir: str) -> None:
        super().__init__(state_dir)
        self.marks: list[float] = []

    async def deploy(self, plan: Plan, verifier: Verifier | None = None) -> Result:
        timed = None if verifier is None else _Timed(verifier, self.marks)
        return await super().deploy(plan, timed)


class _Bench:
    """One running server and the three ways of deploying to it."""

    def __init__(self, sidecar: Sidecar, versions: Sequence[Material], state_dir: str) -> None:
        self.sidecar = sidecar
        self.versions = versions
        self.target = load_connector(sidecar.server.target_type, sidecar.target_config())
        self.engine = _TimedEngine(state_dir)
        self.turn = 0
        self.verify_attempts: list[int] = []

    def next_version(self) -> Material:
        version = self.versions[self.turn % len(self.versions)]
        self.turn += 1
        return version

    def settle(self) -> None:
        """Let the last reload finish before the next phase starts timing."""
        last = self.versions[(self.turn - 1) % len(self.versions)]
        self.sidecar.wait_served(fingerprint_sha256(last.leaf()), timeout=SERVE_TIMEOUT)

    def ours(self) -> _Phase:
        phase = _Phase("ours: connector deploy + verify")

        async def loop() -> None:
            for index in range(WARMUP + ROUNDS):
                version = self.next_version()
                started = time.perf_counter()
                result = await self.target.deploy(
                    self.engine, version.cert_pem, version.chain_pem, version.key_pem
                )
                finished = time.perf_counter()
                elapsed = finished - started
                if result.skipped_as_idempotent or result.verification is None:
                    raise RuntimeError(f"deploy {index} was not a verified deploy: {result}")
                if index >= WARMUP:
                    phase.samples.append(elapsed)
                    self.verify_attempts.append(result.verification.attempts)
                    verify_started = self.engine.marks[-1]
                    phase.stage("apply+validate+reload", verify_started - started)
                    phase.stage("verify", finished - verify_started)

        trio.run(loop)
        return phase

    def floor(self) -> _Phase:
        phase = _Phase("floor: validate + reload + first new handshake")
        sidecar = self.sidecar
        for index in range(WARMUP + ROUNDS):
            version = self.next_version()
            wanted = fingerprint_sha256(version.leaf())
            _write_naively(self.target, version)  # untimed: the floor is the server's work
            started = time.perf_counter()
            _run(sidecar.validate_argv)
            validated = time.perf_counter()
            _run(sidecar.reload_argv)
            reloaded = time.perf_counter()
            handshakes = self._until_served(wanted)
            served = time.perf_counter()
            if index >= WARMUP:
                phase.samples.append(served - started)
                phase.stage("validate", validated - started)
                phase.stage("reload", reloaded - validated)
                phase.stage("handshakes", served - reloaded)
                phase.handshakes.append(handshakes)
        return phase

    def naive(self) -> _Phase:
        phase = _Phase("naive: copy files + reload, nothing checked")
        for index in range(WARMUP + ROUNDS):
            version = self.next_version()
            started = time.perf_counter()
            _write_naively(self.target, version)
            _run(self.sidecar.reload_argv)
            if index >= WARMUP:
                phase.samples.append(time.perf_counter() - started)
        return phase

    def _until_served(self, wanted: str) -> int:
        """Handshakes until the served leaf is ``wanted``; no sleep between them."""
        deadline = time.monotonic() + SERVE_TIMEOUT
        handshakes = 0
        while True:
            handshakes += 1
            try:
                if fingerprint_sha256(self.sidecar.served(timeout=SERVE_TIMEOUT)) == wanted:
                    return handshakes
            except OSError:
                pass  # a listener being replaced; the floor keeps polling like a client would
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.sidecar.name} never served {wanted}")


def _measure(name: str, versions: Sequence[Material], root: str) -> None:
    first = versions[-1]
    try:
        with launch(name, first.cert_pem, first.chain_pem, first.key_pem, docker=False) as car:
            bench = _Bench(car, versions, os.path.join(root, f"state-{name}"))
            bench.turn = len(versions)  # the sidecar started on the last version
            print(
                f"{name} on {car.endpoint.host}:{car.endpoint.port}, {ROUNDS} deploys per row "
                f"after {WARMUP} warm-up, {len(versions)} versions alternating"
            )
            steps: list[Callable[[], _Phase]] = [bench.ours, bench.floor, bench.naive]
            phases = []
            for step in steps:
                phases.append(step())
                bench.settle()
            for phase in phases:
                _report(phase)
            ours, floor, naive = phases
            attempts = bench.verify_attempts
            retried = sum(1 for a in attempts if a > 1)
            print(
                f"  ours' verify needed a retry in {retried} of {len(attempts)} deploys "
                f"(max {max(attempts)} attempts)"
            )
            o50, _, o99, o_rate = _figures(ours.samples)
            f50, _, f99, _ = _figures(floor.samples)
            n50, _, _, n_rate = _figures(naive.samples)
            verdict = "within" if o50 / f50 <= TARGET else "ABOVE"
            print(
                f"  ratio ours/floor: p50 {o50 / f50:.2f} ({verdict} target <= {TARGET}), "
                f"p99 {o99 / f99:.2f}; naive is {n_rate / o_rate:.1f}x ours' deploys/s "
                f"(p50 ours/naive {o50 / n50:.1f})"
            )
    except SidecarUnavailable as exc:
        print(f"{name}: skipped, server unavailable: {exc}")


def run() -> None:
    issuer = ScratchCA("certctl bench")
    versions = [issuer.issue("localhost") for _ in range(VERSIONS)]
    with tempfile.TemporaryDirectory(prefix="certctl-bench-connectors-") as root:
        for name in SERVERS:
            _measure(name, versions, root)
