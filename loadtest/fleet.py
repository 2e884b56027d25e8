"""A fleet of simulated agents on the control plane, with their real cadence, in one process.

    python loadtest/fleet.py --host https://127.0.0.1:8443 --ca ca.pem --agents 2000 \\
        --protocol long --seconds 150 --work-rate 2

``benchmarks/fleet_api.py`` (``nox -s bench -- fleet-api``) starts a server, runs this file in
a separate process and reads what it prints; it runs by hand against any server too.

Why trio, raw TLS and h11 rather than locust: the point is to hold up to 10,000
simultaneous keep-alive TLS connections, most of them parked in a long poll, in one
process on a 2-core machine shared with the server and PostgreSQL. Here an agent is one
trio task with one ``trio.SSLStream`` over ``trio.open_tcp_stream`` and one
``h11.Connection``: a few tens of KB each, and nothing runs while it waits. locust's
greenlet per user with its per-request events, statistics and stats machinery costs far
more per user and per request, and would measure the load generator instead of the server.

Protocols (``--protocol``):

- ``short``: today's cadence: ``GET /api/v1/agents/{id}/work`` (``wait=0``) every
  ``--poll-interval`` (30 s) and ``POST .../heartbeat`` every ``--heartbeat-interval``
  (60 s), each agent from a random phase of both.
- ``long``: ``GET .../work?wait=W`` (``--wait``, 55 s) with the heartbeat's facts in the
  ``Certctl-*`` headers, asked again as soon as the answer is handled; no heartbeats. A poll
  the server did not hold (``wait_seconds`` 0: no long polls there, or the replica is at its
  cap of waiting polls) puts that agent on the short cadence until a poll is held again.

A Deployment job (``status: Running``) in an answer is reported ``Completed`` at once.

Setup, outside every measurement: agents are registered through the API with the bootstrap
token (``--registry`` keeps their ids and keys in a file, so later runs against the same
server reuse them), and the first ``--workers`` of them get a File target and a
certificate mapped to it, issued from a CSR of the agent's own key as in
``loadtest/agent_api.py``; any job those certificates queued is claimed and completed.
The other agents only poll.

Then phases (``--phase NAME:AGENTS:SECONDS[:RATE]``, repeatable; or one phase from
``--agents``/``--seconds``/``--work-rate``): agents are connected (TLS verified against
the server's CA only, ``--connect-rate`` per second so handshakes do not swamp the
server) until AGENTS are, ``--warmup`` seconds pass, and then the window of SECONDS runs
while an operator calls ``POST /api/v1/certificates/{id}/deploy`` RATE times a second,
spread over the worker agents that have no job outstanding. The generator notes when each
deploy call returned (its body names the job) and when the worker's poll brought that job:
the difference is the delivery latency. After the last phase the operator stops and the
jobs still on their way get ``--drain`` seconds to arrive.

Errors are every non-2xx answer and every transport error (refused, reset, closed,
timed out after the poll's wait plus 30 s). On 429/503 the agent backs off (``Retry-After``
when given), on a closed connection it reconnects (counted); SIGTERM/SIGINT stop the run,
and the results are printed all the same. Every run is capped in time (``--max-seconds``).

Output: one JSON object per line on stdout: ``{"event": "setup_done"}``, ``phase_start``,
``phase_end`` (with wall-clock ``t``, so a caller can sample the server from ``/proc``
over a window) and, last, ``{"event": "result", ...}``. Progress goes to stderr.

Environment, for what stays off the command line: ``CERTCTL_SERVER_CA_BUNDLE_PATH``
(``--ca``), ``CERTCTL_AGENT_BOOTSTRAP_TOKEN`` (``--bootstrap-token``) and
``CERTCTL_LOAD_API_KEY`` (``--api-key``, an operator key; needed for workers).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import random
import resource
import signal
import ssl
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import trio

from certctl.pki.csr import build_csr
from certctl.pki.keys import generate_key
from certctl.pki.names import SubjectAltNames
from certctl.protocol import FACT_HEADERS

REQUEST_SLACK = 30.0  # a request may take its wait plus this long
SETUP_TIMEOUT = 60.0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 60.0
RECEIVE_BYTES = 16_384
EARLY_MARGIN = 2.0  # a held poll answered empty this much before its wait is "early"
OWNER_ID = "owner-fleet"
OK = range(200, 300)

Headers = list[tuple[str, str]]


LATE = 2.0
"""Seconds after which a delivery is logged as it happens (the p99 bound of the target)."""


def log(message: str) -> None:
    print(f"  [fleet] {message}", file=sys.stderr, flush=True)


def emit(event: str, **values: Any) -> None:
    """One machine-readable line on stdout, with wall-clock time."""
    print(json.dumps({"event": event, "t": time.time(), **values}), flush=True)


def raise_nofile() -> tuple[int, int]:
    """RLIMIT_NOFILE raised to its hard limit: one descriptor per agent connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of a sorted list (None when empty)."""
    if not ordered:
        return None
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def self_rss_kb() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- HTTP


class TransportError(Exception):
    """The connection failed (refused, reset, closed, timed out, unparsable answer)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return self.status in OK

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def retry_after(self) -> float | None:
        try:
            return min(RETRY_AFTER_MAX, max(0.0, float(self.headers.get("retry-after", ""))))
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    context: ssl.SSLContext

    @classmethod
    def from_url(cls, url: str, ca_file: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise SystemExit(f"--host must be an https:// URL, not {url!r}")
        context = ssl.create_default_context(cafile=ca_file)  # verifies name and chain
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        return cls(parts.hostname, parts.port or 443, context)


class Client:
    """One keep-alive HTTPS/1.1 connection: ``trio.SSLStream`` and ``h11``, one request at
    a time. A failed request closes it; ``connect`` opens a new one."""

    __slots__ = ("_h11", "_stream", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self._stream: trio.SSLStream[trio.SocketStream] | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    @property
    def connected(self) -> bool:
        return self._stream is not None

    async def connect(self, timeout: float = 15.0) -> None:
        await self.close()
        try:
            with trio.fail_after(timeout):
                tcp = await trio.open_tcp_stream(self.target.host, self.target.port)
                stream = trio.SSLStream(
                    tcp,
                    self.target.context,
                    server_hostname=self.target.host,
                    https_compatible=True,
                )
                try:
                    await stream.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError) as exc:
            raise TransportError(f"connect: {type(exc).__name__}") from exc
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT)

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str = "",
        body: object = None,
        headers: Iterable[tuple[str, str]] = (),
        timeout: float = REQUEST_SLACK,
    ) -> Response:
        if self._stream is None:
            raise TransportError("not connected")
        stream, conn = self._stream, self._h11
        data = b"" if body is None else json.dumps(body).encode()
        head: Headers = [("Host", self.target.host)]
        if token:
            head.append(("Authorization", f"Bearer {token}"))
        if body is not None:
            head += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        head.extend(headers)
        try:
            with trio.fail_after(timeout):
                out = conn.send(h11.Request(method=method, target=path, headers=head))
                if data:
                    out += conn.send(h11.Data(data=data))
                out += conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                response = await self._receive(stream, conn)
        except (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.TooSlowError,
            h11.ProtocolError,
            ssl.SSLError,
        ) as exc:
            await self.close()
            raise TransportError(type(exc).__name__) from exc
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            await self.close()
        else:
            conn.start_next_cycle()
        return response

    @staticmethod
    async def _receive(stream: trio.SSLStream[trio.SocketStream], conn: h11.Connection) -> Response:
        status, headers, chunks = 0, {}, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(RECEIVE_BYTES))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Response(status, headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("closed by the server")


# --------------------------------------------------------------------------- setup


class SetupError(RuntimeError):
    """A setup call failed: the run cannot start."""


@dataclass(slots=True)
class Identity:
    agent_id: str
    agent_key: str
    name: str
    cert_id: str = ""


def load_registry(path: Path | None) -> list[Identity]:
    if path is None or not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [Identity(**json.loads(line)) for line in f if line.strip()]


def save_registry(path: Path | None, identities: list[Identity]) -> None:
    if path is None:
        return
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # agent keys
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        for identity in identities:
            out.write(json.dumps(_row(identity)) + "\n")
    temporary.replace(path)


def _row(identity: Identity) -> dict[str, str]:
    return {
        "agent_id": identity.agent_id,
        "agent_key": identity.agent_key,
        "name": identity.name,
        "cert_id": identity.cert_id,
    }


async def _setup_call(
    client: Client,
    method: str,
    path: str,
    token: str,
    body: object = None,
    *,
    expect: tuple[int, ...] = (200, 201, 202),
) -> Any:
    for attempt in range(5):
        try:
            if not client.connected:
                await client.connect()
            response = await client.request(
                method, path, token=token, body=body, timeout=SETUP_TIMEOUT
            )
        except TransportError as exc:
            if attempt == 4:
                raise SetupError(f"{method} {path}: {exc}") from exc
            await trio.sleep(BACKOFF_FIRST * 2**attempt)
            continue
        if response.status in (429, 503) and attempt < 4:
            await trio.sleep(response.retry_after() or BACKOFF_FIRST * 2**attempt)
            continue
        if response.status not in expect:
            raise SetupError(f"{method} {path}: {response.status} {response.body[:300]!r}")
        return response.json()
    raise SetupError(f"{method} {path}: no answer")  # pragma: no cover (loop returns)


def _csr(common_name: str) -> str:
    """A CSR for ``common_name`` from a fresh ECDSA P-256 key, as an agent makes it."""
    names = SubjectAltNames(dns=(common_name,))
    return build_csr(generate_key(), common_name=common_name, sans=names).decode()


@dataclass
class SetupConfig:
    target: Target
    bootstrap_token: str
    api_key: str
    agents: int
    workers: int
    concurrency: int
    registry: Path | None


async def _in_parallel(
    target: Target, concurrency: int, jobs: list[Any], work: Any, what: str
) -> None:
    """``await work(client, job)`` for every job, on ``concurrency`` connections, with
    progress every tenth."""
    if not jobs:
        return
    pending = iter(jobs)
    done = 0
    step = max(1, len(jobs) // 10)
    started = time.monotonic()

    async def lane() -> None:
        nonlocal done
        client = Client(target)
        try:
            for job in pending:
                await work(client, job)
                done += 1
                if done % step == 0 or done == len(jobs):
                    rate = done / max(time.monotonic() - started, 1e-6)
                    log(f"{what}: {done}/{len(jobs)} ({rate:.0f}/s)")
        finally:
            await client.close()

    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, len(jobs))):
            nursery.start_soon(lane)


async def setup(config: SetupConfig) -> list[Identity]:
    """Registered agents (``config.agents`` of them), the first ``workers`` with a
    certificate and no job outstanding. Not measured; may be slow."""
    identities = load_registry(config.registry)[: config.agents]
    missing = config.agents - len(identities)
    started = time.monotonic()
    if identities:
        log(f"registry {config.registry}: {len(identities)} agents reused")
    try:
        if missing > 0:
            if not config.bootstrap_token:
                raise SetupError("set CERTCTL_AGENT_BOOTSTRAP_TOKEN (or --bootstrap-token)")
            prefix = f"fleet-{os.getpid()}-{int(time.time())}"

            async def register(client: Client, index: int) -> None:
                name = f"{prefix}-{index:05d}"
                answer = await _setup_call(
                    client,
                    "POST",
                    "/api/v1/agents/register",
                    config.bootstrap_token,
                    {
                        "name": name,
                        "hostname": f"{name}.fleet.example.com",
                        "os": "linux",
                        "architecture": "amd64",
                        "version": "fleet",
                    },
                    expect=(201,),
                )
                identities.append(Identity(answer["agent_id"], answer["agent_key"], name))

            await _in_parallel(
                config.target,
                config.concurrency,
                list(range(missing)),
                register,
                "registered agents",
            )
        workers = identities[: config.workers]
        need_cert = [w for w in workers if not w.cert_id]
        if need_cert:
            if not config.api_key:
                raise SetupError("set CERTCTL_LOAD_API_KEY (or --api-key) for worker agents")
            owner_client = Client(config.target)
            await _setup_call(
                owner_client,
                "POST",
                "/api/v1/owners",
                config.api_key,
                {"id": OWNER_ID, "name": "fleet load", "email": "fleet@example.com"},
                expect=(201, 409),
            )
            await owner_client.close()
            await _in_parallel(
                config.target,
                config.concurrency,
                need_cert,
                _give_certificate(config),
                "worker certificates",
            )
        await _in_parallel(
            config.target, config.concurrency, workers, _drain_worker, "workers drained"
        )
    finally:
        save_registry(config.registry, identities)
    log(
        f"setup: {len(identities)} agents ({max(missing, 0)} registered now), "
        f"{min(config.workers, len(identities))} workers, {time.monotonic() - started:.0f} s"
    )
    return identities


def _give_certificate(config: SetupConfig) -> Any:
    async def give(client: Client, worker: Identity) -> None:
        name, api = worker.name, config.api_key
        common_name = f"{name}.fleet.example.com"
        target = await _setup_call(
            client,
            "POST",
            "/api/v1/targets",
            api,
            {
                "name": name,
                "type": "File",
                "agent_id": worker.agent_id,
                "config": {
                    "cert_path": f"/srv/{name}/cert.pem",
                    "key_path": f"/srv/{name}/key.pem",
                    "reload_command": "/bin/true",
                    "validate_command": "/bin/true",
                },
            },
            expect=(201,),
        )
        created = await _setup_call(
            client,
            "POST",
            "/api/v1/certificates",
            api,
            {
                "name": name,
                "common_name": common_name,
                "sans": [common_name],
                "owner_id": OWNER_ID,
                "target_ids": [target["id"]],
            },
            expect=(201,),
        )
        # The agent's half of issuance: its own key, a CSR for the certificate's name.
        await _setup_call(
            client,
            "POST",
            f"/api/v1/agents/{worker.agent_id}/csr",
            worker.agent_key,
            {"job_id": created["job_ids"][0], "csr_pem": _csr(common_name)},
        )
        worker.cert_id = created["certificate"]["id"]

    return give


async def _drain_worker(client: Client, worker: Identity) -> None:
    """Claim and complete what the worker has queued or left Running (issuance's first
    deployment, or a job an earlier run left behind), so each window starts clean."""
    path = f"/api/v1/agents/{worker.agent_id}"
    try:
        work = await _setup_call(client, "GET", f"{path}/work?resume=true", worker.agent_key)
    except SetupError as exc:
        raise SetupError(f"{exc} (is --registry from another server?)") from None
    for job in work["jobs"]:
        if job["type"] == "Deployment" and job["status"] == "Running":
            await _setup_call(
                client,
                "POST",
                f"{path}/jobs/{job['job_id']}/status",
                worker.agent_key,
                _completed(),
                expect=(200, 409),
            )


def _completed() -> dict[str, Any]:
    return {"status": "Completed", "verification": {"status": "Skipped"}}


# --------------------------------------------------------------------------- the fleet


@dataclass(frozen=True)
class Phase:
    name: str
    agents: int
    seconds: float
    rate: float

    @classmethod
    def parse(cls, text: str) -> Phase:
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise argparse.ArgumentTypeError(f"--phase NAME:AGENTS:SECONDS[:RATE], not {text!r}")
        rate = float(parts[3]) if len(parts) == 4 else 0.0
        return cls(parts[0], int(parts[1]), float(parts[2]), rate)


@dataclass
class Stats:
    """What happened while one phase (or ramp, or the drain) was current."""

    name: str
    agents: int = 0
    rate: float = 0.0
    kind: str = "window"  # window / ramp / drain
    t_start: float = 0.0
    t_end: float = 0.0
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    reconnects: int = 0
    unheld: int = 0
    early: int = 0
    created: int = 0
    no_free_worker: int = 0
    connected: int = 0
    in_poll: int = 0
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    rss_kb: int = 0


@dataclass(slots=True)
class Delivery:
    phase: str
    created: float | None = None
    seen: float | None = None


class Pacer:
    """Spaces events ``1 / rate`` apart across all callers (connects, reconnects)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1 / rate
        self.next = 0.0

    async def wait(self) -> None:
        slot = max(self.next, trio.current_time())
        self.next = slot + self.interval
        await trio.sleep_until(slot)


@dataclass
class FleetConfig:
    target: Target
    api_key: str
    protocol: str
    wait: int
    poll_interval: float
    heartbeat_interval: float
    connect_rate: float
    warmup: float
    drain: float
    operator_connections: int


class Fleet:
    def __init__(
        self, config: FleetConfig, identities: list[Identity], workers: int, phases: list[Phase]
    ) -> None:
        self.config = config
        self.identities = identities
        self.phases = phases
        self.long = config.protocol == "long"
        self.pacer = Pacer(config.connect_rate)
        self.current = Stats("setup", kind="ramp")
        self.history: list[Stats] = []
        self.open = 0
        self.in_poll = 0
        self.rate = 0.0
        self.deliveries: dict[str, Delivery] = {}
        self.free = collections.deque(range(min(workers, len(identities))))
        self.busy: set[int] = set()
        self.spawned = 0
        self.facts = [
            (FACT_HEADERS["os"], "linux"),
            (FACT_HEADERS["architecture"], "amd64"),
            (FACT_HEADERS["version"], "fleet"),
        ]

    # -- bookkeeping

    def begin(self, stats: Stats) -> None:
        self.end()
        stats.t_start, stats.cpu_start = time.time(), self_cpu()
        self.current = stats

    def end(self) -> None:
        stats = self.current
        if stats.kind == "setup" or stats.t_start == 0:
            return
        stats.t_end, stats.cpu_end = time.time(), self_cpu()
        stats.connected, stats.in_poll, stats.rss_kb = self.open, self.in_poll, self_rss_kb()
        self.history.append(stats)

    async def connect(self, client: Client) -> None:
        """Open ``client``, paced with every other connect, retrying until it works."""
        failures = 0
        while True:
            await self.pacer.wait()
            try:
                await client.connect()
            except TransportError as exc:
                self.current.errors["connect"] += 1
                self.current.reasons[str(exc)] += 1
                failures += 1
                await trio.sleep(_backoff(failures))
                continue
            self.open += 1
            return

    async def call(
        self,
        client: Client,
        kind: str,
        method: str,
        path: str,
        *,
        token: str,
        body: object = None,
        headers: Iterable[tuple[str, str]] = (),
        wait: float = 0.0,
    ) -> Response | None:
        """One counted request; ``None`` after a transport error (the connection is then
        closed, and the next call reconnects and counts that)."""
        if not client.connected:
            self.current.reconnects += 1
            await self.connect(client)
        try:
            response = await client.request(
                method, path, token=token, body=body, headers=headers, timeout=wait + REQUEST_SLACK
            )
        except TransportError as exc:
            self.open -= 1
            stats = self.current
            stats.requests[kind] += 1
            stats.errors[kind] += 1
            stats.reasons[f"{kind}: {exc}"] += 1
            return None
        if not client.connected:  # the server asked to close
            self.open -= 1
        stats = self.current
        stats.requests[kind] += 1
        if not response.ok:
            stats.errors[kind] += 1
            stats.reasons[f"{kind}: {response.status}"] += 1
        return response

    # -- deliveries

    def seen(self, job_id: str) -> None:
        delivery = self.deliveries.get(job_id)
        if delivery is None:
            # Either the deploy call's answer has not been read yet (the poll was quicker),
            # or a job from before this run.
            self.deliveries[job_id] = Delivery(phase="", seen=trio.current_time())
        elif delivery.seen is None:
            delivery.seen = trio.current_time()
            if delivery.created is not None and delivery.seen - delivery.created > LATE:
                log(f"late delivery: job {job_id} after {delivery.seen - delivery.created:.1f} s")

    def release(self, worker: int) -> None:
        if worker in self.busy:
            self.busy.discard(worker)
            self.free.append(worker)

    async def operator(self) -> None:
        """Deploy calls at ``self.rate`` a second, each to a worker with nothing pending."""
        pool_send, pool = trio.open_memory_channel[Client](self.config.operator_connections)
        for _ in range(self.config.operator_connections):
            pool_send.send_nowait(Client(self.config.target))
        async with trio.open_nursery() as nursery:
            next_at = trio.current_time()
            while True:
                if self.rate <= 0:
                    await trio.sleep(0.1)
                    next_at = trio.current_time()
                    continue
                next_at = max(next_at + 1 / self.rate, trio.current_time() - 1)
                await trio.sleep_until(next_at)
                if not self.free:
                    self.current.no_free_worker += 1
                    continue
                worker = self.free.popleft()
                self.busy.add(worker)
                nursery.start_soon(self._deploy, worker, pool, pool_send)

    async def _deploy(
        self,
        worker: int,
        pool: trio.MemoryReceiveChannel[Client],
        pool_send: trio.MemorySendChannel[Client],
    ) -> None:
        client = await pool.receive()
        stats = self.current
        try:
            cert_id = self.identities[worker].cert_id
            response = await self.call(
                client,
                "deploy",
                "POST",
                f"/api/v1/certificates/{cert_id}/deploy",
                token=self.config.api_key,
                body={},
            )
        finally:
            pool_send.send_nowait(client)
        returned = trio.current_time()
        if response is None or not response.ok:
            self.release(worker)
            return
        stats.created += 1
        for job_id in response.json().get("job_ids", []):
            delivery = self.deliveries.setdefault(job_id, Delivery(phase=stats.name))
            delivery.phase, delivery.created = stats.name, returned

    # -- agents

    async def agent(self, index: int) -> None:
        identity = self.identities[index]
        client = Client(self.config.target)
        try:
            await self.connect(client)
            agent = _Agent(self, identity, client, index)
            await (agent.long_loop() if self.long else agent.short_loop())
        finally:
            if client.connected:
                self.open -= 1
            await client.close()

    async def grow(self, nursery: trio.Nursery, agents: int) -> None:
        """Start agents until ``agents`` run, and wait until they are connected."""
        agents = min(agents, len(self.identities))
        if agents <= self.spawned:
            return
        log(f"connecting agents {self.spawned} -> {agents} at {self.config.connect_rate:g}/s")
        while self.spawned < agents:
            nursery.start_soon(self.agent, self.spawned)
            self.spawned += 1
        deadline = trio.current_time() + agents / self.config.connect_rate + 120
        last = trio.current_time()
        while self.open < agents and trio.current_time() < deadline:
            await trio.sleep(0.25)
            if trio.current_time() - last >= 5:
                last = trio.current_time()
                log(f"  {self.open}/{agents} connected")
        log(f"{self.open}/{agents} connected")

    async def drive(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.operator)
            for phase in self.phases:
                self.rate = 0.0
                self.begin(Stats(f"ramp to {phase.agents}", agents=phase.agents, kind="ramp"))
                await self.grow(nursery, phase.agents)
                await trio.sleep(self.config.warmup)
                self.begin(Stats(phase.name, agents=phase.agents, rate=phase.rate))
                self.rate = phase.rate
                emit(
                    "phase_start",
                    phase=phase.name,
                    agents=phase.agents,
                    connected=self.open,
                    rate=phase.rate,
                )
                log(
                    f"phase {phase.name}: {self.open} agents, {phase.seconds:g} s, "
                    f"{phase.rate:g} deploys/s"
                )
                await trio.sleep(phase.seconds)
                self.end()
                last = self.history[-1]
                emit("phase_end", phase=phase.name, connected=last.connected)
                self.begin(Stats("between", kind="ramp"))
            self.rate = 0.0
            self.begin(Stats("drain", kind="drain"))
            deadline = trio.current_time() + self.config.drain
            while trio.current_time() < deadline and any(
                d.created is not None and d.seen is None for d in self.deliveries.values()
            ):
                await trio.sleep(0.25)
            self.end()
            nursery.cancel_scope.cancel()

    # -- result

    def result(self) -> list[dict[str, Any]]:
        rows = []
        for stats in self.history:
            latencies = sorted(
                max(0.0, d.seen - d.created)
                for d in self.deliveries.values()
                if d.phase == stats.name and d.created is not None and d.seen is not None
            )
            undelivered = sum(
                1
                for d in self.deliveries.values()
                if d.phase == stats.name and d.created is not None and d.seen is None
            )
            rows.append(
                {
                    "name": stats.name,
                    "kind": stats.kind,
                    "agents": stats.agents,
                    "connected": stats.connected,
                    "in_poll": stats.in_poll,
                    "rate": stats.rate,
                    "t_start": stats.t_start,
                    "t_end": stats.t_end,
                    "seconds": stats.t_end - stats.t_start,
                    "requests": dict(stats.requests),
                    "requests_total": sum(stats.requests.values()),
                    "errors": dict(stats.errors),
                    "errors_total": sum(stats.errors.values()),
                    "reasons": dict(stats.reasons.most_common(10)),
                    "reconnects": stats.reconnects,
                    "unheld_polls": stats.unheld,
                    "early_empty_polls": stats.early,
                    "deploys": stats.created,
                    "no_free_worker": stats.no_free_worker,
                    "delivered": len(latencies),
                    "undelivered": undelivered,
                    "delivery_p50": percentile(latencies, 50),
                    "delivery_p99": percentile(latencies, 99),
                    "delivery_max": latencies[-1] if latencies else None,
                    "generator_cpu_s": stats.cpu_end - stats.cpu_start,
                    "generator_rss_kb": stats.rss_kb,
                }
            )
        return rows


def _backoff(failures: int, retry_after: float | None = None) -> float:
    if retry_after:
        return retry_after + random.uniform(0, 1)  # noqa: S311 (jitter, not a secret)
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311


class _Agent:
    """One agent's loop on its one connection."""

    __slots__ = ("client", "failures", "fleet", "identity", "index", "last_heartbeat", "path")

    def __init__(self, fleet: Fleet, identity: Identity, client: Client, index: int) -> None:
        self.fleet = fleet
        self.identity = identity
        self.client = client
        self.index = index
        self.failures = 0
        self.last_heartbeat = trio.current_time()
        self.path = f"/api/v1/agents/{identity.agent_id}"

    async def short_loop(self) -> None:
        config = self.fleet.config
        now = trio.current_time()
        next_poll = now + random.uniform(0, config.poll_interval)  # noqa: S311 (a phase)
        next_beat = now + random.uniform(0, config.heartbeat_interval)  # noqa: S311
        while True:
            await trio.sleep_until(min(next_poll, next_beat))
            now = trio.current_time()
            if next_beat <= next_poll:
                next_beat = max(next_beat + config.heartbeat_interval, now)
                ok, retry = await self.heartbeat()
            else:
                next_poll = max(next_poll + config.poll_interval, now)
                granted, retry = await self.poll(0)
                ok = granted is not None
            if ok:
                self.failures = 0
            else:
                self.failures += 1
                if retry:  # 429/503: nothing before the server's Retry-After
                    resume = trio.current_time() + retry
                    next_poll, next_beat = max(next_poll, resume), max(next_beat, resume)

    async def long_loop(self) -> None:
        config = self.fleet.config
        # A random phase, as in a real fleet, without leaving the agent unreachable at the
        # start: its first poll goes out at once and asks for a random part of the wait.
        wait = random.randint(1, max(1, config.wait))  # noqa: S311 (a phase)
        while True:
            granted, retry = await self.poll(wait)
            wait = config.wait
            if granted is None:
                self.failures += 1
                await trio.sleep(_backoff(self.failures, retry))
                continue
            self.failures = 0
            if granted == 0:
                # Not held: the short cadence (with heartbeats) until a poll is held again.
                self.fleet.current.unheld += 1
                if trio.current_time() - self.last_heartbeat >= config.heartbeat_interval:
                    await self.heartbeat()
                await trio.sleep(config.poll_interval)

    async def heartbeat(self) -> tuple[bool, float | None]:
        self.last_heartbeat = trio.current_time()
        response = await self.fleet.call(
            self.client,
            "heartbeat",
            "POST",
            f"{self.path}/heartbeat",
            token=self.identity.agent_key,
            body={"hostname": f"{self.identity.name}.fleet.example.com", "version": "fleet"},
        )
        if response is None:
            return False, None
        return response.ok, response.retry_after()

    async def poll(self, wait: int) -> tuple[int | None, float | None]:
        """The granted wait (0: not held), or None after an error, and any Retry-After."""
        fleet = self.fleet
        path = f"{self.path}/work?wait={wait}" if wait else f"{self.path}/work"
        headers: list[tuple[str, str]] = []
        if wait:
            headers = [
                (FACT_HEADERS["hostname"], f"{self.identity.name}.fleet.example.com"),
                *fleet.facts,
            ]
        started = trio.current_time()
        fleet.in_poll += 1
        try:
            response = await fleet.call(
                self.client,
                "poll",
                "GET",
                path,
                token=self.identity.agent_key,
                headers=headers,
                wait=wait,
            )
        finally:
            fleet.in_poll -= 1
        if response is None:
            return None, None
        if not response.ok:
            return None, response.retry_after()
        try:
            work = response.json()
            jobs, granted = work["jobs"], int(work.get("wait_seconds", 0) or 0)
        except (ValueError, KeyError, TypeError):
            fleet.current.errors["poll"] += 1
            fleet.current.reasons["poll: unparsable answer"] += 1
            return None, None
        if granted and not jobs and trio.current_time() - started < granted - EARLY_MARGIN:
            fleet.current.early += 1
        for job in jobs:
            if job.get("type") == "Deployment" and job.get("status") == "Running":
                fleet.seen(job["job_id"])
                await self.complete(job["job_id"])
        if granted and not jobs and trio.current_time() - started < 1:
            await trio.sleep(1)  # a server that does not hold must not make this spin
        return granted, None

    async def complete(self, job_id: str) -> None:
        response = await self.fleet.call(
            self.client,
            "status",
            "POST",
            f"{self.path}/jobs/{job_id}/status",
            token=self.identity.agent_key,
            body=_completed(),
        )
        if response is not None and response.ok:
            self.fleet.release(self.index)


# --------------------------------------------------------------------------- main


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Simulated agents on a certctl control plane (see the module docstring)."
    )
    parser.add_argument("--host", required=True, help="https://HOST:PORT of the server")
    parser.add_argument("--ca", default=os.environ.get("CERTCTL_SERVER_CA_BUNDLE_PATH", ""))
    parser.add_argument(
        "--bootstrap-token", default=os.environ.get("CERTCTL_AGENT_BOOTSTRAP_TOKEN", "")
    )
    parser.add_argument("--api-key", default=os.environ.get("CERTCTL_LOAD_API_KEY", ""))
    parser.add_argument("--protocol", choices=("long", "short"), default="long")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--work-rate", type=float, default=0.0, help="deploys per second")
    parser.add_argument(
        "--phase",
        type=Phase.parse,
        action="append",
        default=[],
        help="NAME:AGENTS:SECONDS[:RATE], repeatable; replaces --seconds/--work-rate",
    )
    parser.add_argument("--workers", type=int, default=200, help="agents with a certificate")
    parser.add_argument("--wait", type=int, default=55, help="long poll: wait= in seconds")
    parser.add_argument("--poll-interval", type=float, default=30.0)
    parser.add_argument("--heartbeat-interval", type=float, default=60.0)
    parser.add_argument("--connect-rate", type=float, default=250.0, help="connects/s")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after connecting")
    parser.add_argument("--settle", type=float, default=0.0, help="pause after setup, s")
    parser.add_argument("--drain", type=float, default=-1.0, help="s for late deliveries")
    parser.add_argument("--setup-concurrency", type=int, default=8)
    parser.add_argument("--operator-connections", type=int, default=8)
    parser.add_argument("--registry", type=Path, default=None, help="agents file to reuse")
    parser.add_argument("--register-only", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=0.0, help="cap (0: computed)")
    return parser.parse_args(argv)


async def _watch_signals(scope: trio.CancelScope, stopped: list[str]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            stopped.append(signal.Signals(signum).name)
            scope.cancel()
            return


async def _main(args: argparse.Namespace, nofile: tuple[int, int]) -> dict[str, Any]:
    if not args.ca:
        raise SystemExit("set --ca or CERTCTL_SERVER_CA_BUNDLE_PATH to the server's CA file")
    target = Target.from_url(args.host, args.ca)
    phases: list[Phase] = args.phase or [Phase("run", args.agents, args.seconds, args.work_rate)]
    agents = max(p.agents for p in phases) if args.phase else args.agents
    if any(p.rate > 0 for p in phases) and not args.api_key:
        raise SystemExit("a work rate needs an operator key: CERTCTL_LOAD_API_KEY or --api-key")
    workers = min(args.workers, agents) if args.api_key else 0
    if agents + args.operator_connections + 64 > nofile[0]:
        log(f"warning: {agents} agents need more descriptors than RLIMIT_NOFILE {nofile[0]}")
    drain = args.drain
    if drain < 0:
        drain = (args.poll_interval if args.protocol == "short" else 0) + 10
    cap = args.max_seconds or (
        3600 + sum(p.seconds + args.warmup + p.agents / args.connect_rate for p in phases) + drain
    )
    stopped: list[str] = []
    result: dict[str, Any] = {
        "protocol": args.protocol,
        "agents": agents,
        "workers": workers,
        "wait": args.wait if args.protocol == "long" else 0,
        "poll_interval": args.poll_interval,
        "heartbeat_interval": args.heartbeat_interval,
        "nofile": list(nofile),
        "phases": [],
    }
    fleet: Fleet | None = None
    started = time.monotonic()
    with trio.move_on_after(cap) as capped:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, nursery.cancel_scope, stopped)
            identities = await setup(
                SetupConfig(
                    target,
                    args.bootstrap_token,
                    args.api_key,
                    agents,
                    workers,
                    args.setup_concurrency,
                    args.registry,
                )
            )
            result["setup_seconds"] = time.monotonic() - started
            emit("setup_done", agents=len(identities), workers=workers)
            if not args.register_only:
                await trio.sleep(args.settle)
                fleet = Fleet(
                    FleetConfig(
                        target,
                        args.api_key,
                        args.protocol,
                        args.wait,
                        args.poll_interval,
                        args.heartbeat_interval,
                        args.connect_rate,
                        args.warmup,
                        drain,
                        args.operator_connections,
                    ),
                    identities,
                    workers,
                    phases,
                )
                await fleet.drive()
            nursery.cancel_scope.cancel()
    if fleet is not None:
        fleet.end()
        result["phases"] = fleet.result()
        # Seen by a poll but never answered by a deploy call of this run.
        result["unknown_jobs"] = sum(1 for d in fleet.deliveries.values() if d.created is None)
    result["stopped"] = stopped[0] if stopped else ("time cap" if capped.cancelled_caught else "")
    result["seconds"] = time.monotonic() - started
    result["generator_cpu_s"] = self_cpu()
    result["generator_rss_kb"] = self_rss_kb()
    return result


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    nofile = raise_nofile()
    log(f"RLIMIT_NOFILE {nofile[0]} (hard {nofile[1]})")
    try:
        result = trio.run(_main, args, nofile)
    except SetupError as exc:
        emit("result", error=str(exc))
        log(f"setup failed: {exc}")
        return 1
    emit("result", **result)
    for row in result["phases"]:
        if row["kind"] == "window":
            log(_summary(row))
    return 0


def _summary(row: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms"

    return (
        f"{row['name']}: {row['connected']} connected, {row['requests_total']} requests, "
        f"{row['errors_total']} errors, {row['reconnects']} reconnects, {row['deploys']} deploys "
        f"-> delivery p50 {ms(row['delivery_p50'])} p99 {ms(row['delivery_p99'])} "
        f"max {ms(row['delivery_max'])} ({row['undelivered']} undelivered)"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
