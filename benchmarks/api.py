"""Control-plane API under an agent workload, over HTTPS with keep-alive, from locust.

A real ``certctl server`` runs as a subprocess (``certctl.testing.server``: fresh TLS
material as ``certctl server init-tls`` makes it, a fresh data directory with the embedded
PostgreSQL, or ``CERTCTL_DATABASE_URL`` when that is set; rate limiting off, log level
warning), and
locust drives it headless from a separate process with the scenario in
``loadtest/agent_api.py``: simulated agents cycling heartbeat, work poll, status report
and the operator deploy that queues the next report (1 : 2 : 1 : 1).

The baseline, measured in the same run against the same server and the same locust
setup, is ``GET /health``: no credentials and no database, so it is the TLS + HTTP +
middleware floor of this server. Each of the two is run at a fixed 100 req/s (20 users
at 5 req/s, each from a random phase) and at saturation (16 users, no wait), with one
and with two server workers. Percentiles come from every request's own timing (locust's
CSV rounds to whole milliseconds below 100 ms), over the run minus its first seconds;
the CSV's aggregated row is printed beside them as a cross-check. CPU time of the server
processes, of PostgreSQL and of locust is sampled from ``/proc`` over the same window,
so the report says how many milliseconds of CPU one request costs and how much of the
two cores the load generator itself took. Before the load, each call of the mix is made
alone on one connection and its server and PostgreSQL CPU measured to the nanosecond,
which says where the cost over the floor comes from.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import importlib.util
import json
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certctl.pki.csr import build_csr
from certctl.pki.keys import generate_key
from certctl.pki.names import SubjectAltNames
from certctl.testing.processes import tail
from certctl.testing.server import ServerProcess, child_env, control_plane

LOCUSTFILE = Path(__file__).resolve().parent.parent / "loadtest" / "agent_api.py"
WORKERS = (1, 2)
FIXED_RATE = 100.0
FIXED_USERS = 20  # 20 agents at 5 req/s each
SATURATION_USERS = 16
FIXED_SECONDS = 20
SATURATION_SECONDS = 15
WARMUP_SECONDS = 3.0  # dropped from every run: spawning, agent setup, first handshakes
PER_CALL_WARMUP = 10
PER_CALL_CYCLES = 150

TARGET_P99_FIXED_MS = 5.0
GO_P99_FIXED_MS = 8.58  # the earlier Go implementation at 100 req/s
TARGET_SATURATION_RPS = 1500.0
TARGET_P99_SATURATION_MS = 25.0


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    user_class: str
    users: int
    rate_per_user: float  # 0: no wait (saturation)
    seconds: int


SCENARIOS = (
    Scenario(
        "floor-fixed",
        "floor: GET /health @100/s",
        "HealthUser",
        FIXED_USERS,
        FIXED_RATE / FIXED_USERS,
        FIXED_SECONDS,
    ),
    Scenario(
        "mix-fixed",
        "agent mix @100/s",
        "AgentUser",
        FIXED_USERS,
        FIXED_RATE / FIXED_USERS,
        FIXED_SECONDS,
    ),
    Scenario(
        "floor-sat",
        "floor: GET /health, saturation",
        "HealthUser",
        SATURATION_USERS,
        0,
        SATURATION_SECONDS,
    ),
    Scenario(
        "mix-sat", "agent mix, saturation", "AgentUser", SATURATION_USERS, 0, SATURATION_SECONDS
    ),
)


@dataclass
class Result:
    rps: float
    p50: float
    p95: float
    p99: float
    requests: int
    failures: int
    by_name: dict[str, tuple[int, float, float]]  # name -> (count, p50, p99)
    cpu: dict[str, float]  # "server" / "postgres" / "locust" -> CPU seconds in the window
    window: float
    csv_row: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- /proc


def _parents() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    return children


def _tree_cpu(root: int | None, children: dict[int, list[int]]) -> float:
    """CPU seconds of ``root`` and its descendants, including reaped children's."""
    if root is None:
        return 0.0
    pids, total = [root], 0
    while pids:
        pid = pids.pop()
        pids.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def _tree_pids(root: int | None, children: dict[int, list[int]]) -> list[int]:
    if root is None:
        return []
    pids, found = [root], []
    while pids:
        pid = pids.pop()
        found.append(pid)
        pids.extend(children.get(pid, ()))
    return found


def _pids_cpu(pids: list[int]) -> float:
    """CPU seconds of every thread of ``pids``, to the nanosecond (``schedstat``), where
    ``/proc/PID/stat`` counts in 10 ms ticks: too coarse for one call of a millisecond."""
    total = 0
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{pid}/task/{thread}/schedstat", encoding="ascii") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


class CPUSampler:
    """Samples the CPU seconds of named process trees every 0.2 s in a thread."""

    def __init__(self, roots: dict[str, int | None]) -> None:
        self.roots = roots
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _take(self) -> None:
        children = _parents()
        now = time.time()
        self.samples.append((now, {k: _tree_cpu(v, children) for k, v in self.roots.items()}))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(0.2)

    def __enter__(self) -> CPUSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def between(self, start: float, end: float) -> dict[str, float]:
        def at(moment: float) -> dict[str, float]:
            before = [s for s in self.samples if s[0] <= moment]
            return (before[-1] if before else self.samples[0])[1]

        first, last = at(start), at(end)
        return {k: last[k] - first[k] for k in self.roots}


def _reference_loop_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop (best of 3): how fast this machine's
    cores are right now. On a shared VM it moves by tens of percent within minutes, and
    every CPU figure of the run moves with it."""
    best = math.inf
    for _ in range(3):
        start, total = time.process_time(), 0
        for i in range(1_000_000):
            total += i * i % 7
        best = min(best, time.process_time() - start)
    return best * 1000


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------- server


@contextlib.contextmanager
def _server(
    root: Path, tls_dir: Path, workers: int, encryption_key: str
) -> Iterator[ServerProcess]:
    """The harness's ``certctl server`` with ``workers`` workers and rate limiting off, once
    every worker has finished starting; its exit status and log tail if it ended badly."""
    settings = {
        "CERTCTL_SERVER_WORKERS": str(workers),
        "CERTCTL_RATE_LIMIT_ENABLED": "false",
        # One key for every run: an external database keeps what an earlier run encrypted.
        "CERTCTL_CONFIG_ENCRYPTION_KEY": encryption_key,
    }
    database = os.environ.get("CERTCTL_DATABASE_URL")
    with control_plane(root, database_url=database, tls_dir=tls_dir, extra_env=settings) as server:
        _wait_idle(server, workers)
        yield server
    if server.process.returncode != 0:
        print(
            f"  (server exited with {server.process.returncode}; log tail:)\n"
            f"{tail(server.log_path, 15)}"
        )


def _postmaster(server: ServerProcess) -> int | None:
    pidfile = Path(server.env["CERTCTL_DATA_DIR"]) / "postgres" / "postmaster.pid"
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None  # external database (CERTCTL_DATABASE_URL)


def _wait_idle(server: ServerProcess, workers: int) -> None:
    """With several workers /ready answers as soon as one serves: wait until the others
    have finished starting too (imports, store pool), i.e. the process tree idles."""
    deadline = time.monotonic() + 30
    previous = _tree_cpu(server.process.pid, _parents())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = _tree_cpu(server.process.pid, _parents())
        if current - previous < 0.05 * workers:
            return
        previous = current


# --------------------------------------------------------------------------- per call


class _Client:
    """One keep-alive HTTPS connection that verifies the server against its CA."""

    def __init__(self, server: ServerProcess) -> None:
        self._conn = http.client.HTTPSConnection(
            "127.0.0.1", server.port, context=server.ssl_context(), timeout=30
        )

    def call(self, method: str, path: str, body: object = None, token: str = "") -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self._conn.request(method, path, body=data, headers=headers)
        response = self._conn.getresponse()
        raw = response.read()
        if response.status not in (200, 201, 202):
            raise RuntimeError(f"{method} {path}: {response.status} {raw[:300]!r}")
        return json.loads(raw) if raw else None

    def close(self) -> None:
        self._conn.close()


def _csr(common_name: str) -> str:
    """A CSR for ``common_name`` from a fresh ECDSA P-256 key, as an agent makes it."""
    names = SubjectAltNames(dns=(common_name,))
    return build_csr(generate_key(), common_name=common_name, sans=names).decode()


def _per_call_cpu(server: ServerProcess) -> dict[str, tuple[float, float]]:
    """Median server and PostgreSQL CPU seconds per call, one at a time on one connection.

    One agent set up as in ``loadtest/agent_api.py``, then ``PER_CALL_CYCLES`` cycles of
    the floor, an operator call that touches no table (auth + audit only) and the five
    calls of the agent mix, each call timed on its own.
    """
    client = _Client(server)
    api, name = server.api_key, f"percall-{secrets.token_hex(4)}"
    common_name = f"{name}.load.example.com"
    owner = client.call(
        "POST", "/api/v1/owners", {"name": "per call", "email": "p@example.com"}, api
    )["id"]
    agent = client.call(
        "POST",
        "/api/v1/agents/register",
        {"name": name, "hostname": common_name},
        server.bootstrap_token,
    )
    agent_id, key = agent["agent_id"], agent["agent_key"]
    target = client.call(
        "POST",
        "/api/v1/targets",
        {
            "name": name,
            "type": "File",
            "agent_id": agent_id,
            "config": {
                "cert_path": f"/srv/{name}/cert.pem",
                "key_path": f"/srv/{name}/key.pem",
                "reload_command": "/bin/true",
                "validate_command": "/bin/true",
            },
        },
        api,
    )
    created = client.call(
        "POST",
        "/api/v1/certificates",
        {
            "name": name,
            "common_name": common_name,
            "sans": [common_name],
            "owner_id": owner,
            "target_ids": [target["id"]],
        },
        api,
    )
    cert_id = created["certificate"]["id"]
    agent_path = f"/api/v1/agents/{agent_id}"
    client.call(
        "POST",
        f"{agent_path}/csr",
        {"job_id": created["job_ids"][0], "csr_pem": _csr(common_name)},
        key,
    )
    running: list[str] = []

    def work() -> None:
        jobs = client.call("GET", f"{agent_path}/work", token=key)["jobs"]
        running.extend(j["job_id"] for j in jobs if j["type"] == "Deployment")

    calls: tuple[tuple[str, Callable[[], object]], ...] = (
        ("GET /health (floor)", lambda: client.call("GET", "/health")),
        (
            "GET /api/v1/auth/check (key + audit)",
            lambda: client.call("GET", "/api/v1/auth/check", token=api),
        ),
        ("heartbeat", lambda: client.call("POST", f"{agent_path}/heartbeat", {}, key)),
        ("work, claims a job", work),
        (
            "status Completed",
            lambda: client.call(
                "POST",
                f"{agent_path}/jobs/{running.pop()}/status",
                {"status": "Completed", "verification": {"status": "Skipped"}},
                key,
            ),
        ),
        ("work, nothing to claim", work),
        (
            "operator: deploy",
            lambda: client.call("POST", f"/api/v1/certificates/{cert_id}/deploy", {}, api),
        ),
    )
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in calls}
    try:
        for cycle in range(PER_CALL_WARMUP + PER_CALL_CYCLES):
            if cycle == PER_CALL_WARMUP:  # pool connections are open by now
                children = _parents()
                server_pids = _tree_pids(server.process.pid, children)
                pg_pids = _tree_pids(_postmaster(server), children)
            for label, call in calls:
                if cycle < PER_CALL_WARMUP:
                    call()
                    continue
                before = _pids_cpu(server_pids), _pids_cpu(pg_pids)
                call()
                time.sleep(0.002)  # the server's work after the response belongs to it
                samples[label].append(
                    (_pids_cpu(server_pids) - before[0], _pids_cpu(pg_pids) - before[1])
                )
    finally:
        client.close()
    # Medians: the scheduler's loops and the audit flush land on a few calls at random.
    return {
        k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v))
        for k, v in samples.items()
    }


# --------------------------------------------------------------------------- locust


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _locust(server: ServerProcess, scenario: Scenario, work: Path) -> Result:
    prefix = work / f"{scenario.key}-{time.monotonic_ns()}"
    run_env = {
        **child_env(),
        "CERTCTL_SERVER_CA_BUNDLE_PATH": str(server.ca_path),
        "CERTCTL_AGENT_BOOTSTRAP_TOKEN": server.bootstrap_token,
        "CERTCTL_LOAD_API_KEY": server.api_key,
        "CERTCTL_LOAD_RATE": str(scenario.rate_per_user),
        "CERTCTL_LOAD_SAMPLES": str(prefix),
    }
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "-u",
        str(scenario.users),
        "-r",
        str(scenario.users),
        "-t",
        f"{scenario.seconds}s",
        "--stop-timeout",
        "5",
        "--host",
        server.url,
        "--csv",
        str(prefix),
        scenario.user_class,
    ]
    roots: dict[str, int | None] = {"server": server.process.pid, "postgres": _postmaster(server)}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=run_env, text=True
    )
    roots["locust"] = process.pid
    with CPUSampler(roots) as sampler:
        output, _ = process.communicate(timeout=scenario.seconds + 120)

    samples = []
    for path in work.glob(f"{prefix.name}.*.jsonl"):
        with open(path, encoding="utf-8") as f:
            samples.extend(json.loads(line) for line in f)
    if not samples:
        raise RuntimeError(f"locust recorded no request ({process.returncode}):\n{output[-3000:]}")
    begin = min(s[0] for s in samples) + WARMUP_SECONDS
    end = max(s[0] for s in samples)
    window = [s for s in samples if begin <= s[0] <= end]
    times = sorted(s[1] for s in window)
    by_name: dict[str, tuple[int, float, float]] = {}
    for name in sorted({s[2] for s in window}):
        mine = sorted(s[1] for s in window if s[2] == name)
        by_name[name] = (len(mine), _percentile(mine, 50), _percentile(mine, 99))
    csv_row: dict[str, str] = {}
    with contextlib.suppress(OSError), open(f"{prefix}_stats.csv", encoding="utf-8") as f:
        csv_row = next((r for r in csv.DictReader(f) if r["Name"] == "Aggregated"), {})
    warnings = [
        line.strip()
        for line in output.splitlines()
        if "CPU usage" in line or "Traceback" in line or "Error" in line
    ]
    return Result(
        rps=len(window) / (end - begin),
        p50=_percentile(times, 50),
        p95=_percentile(times, 95),
        p99=_percentile(times, 99),
        requests=len(window),
        failures=sum(1 for s in window if not s[3]),
        by_name=by_name,
        cpu=sampler.between(begin, end),
        window=end - begin,
        csv_row=csv_row,
        warnings=sorted(set(warnings))[:5],
    )


# --------------------------------------------------------------------------- report


def _row(label: str, workers: int, users: int, r: Result) -> str:
    per = 1000 / max(r.requests, 1)
    # An external database (CERTCTL_DATABASE_URL) is not a process of this machine's.
    pg = "n/a" if _external_db() else f"{r.cpu['postgres'] * per:.2f}"
    return (
        f"{label:<32} {workers:>2} {users:>5} {r.rps:>8,.0f} {r.p50:>7.2f} {r.p95:>7.2f} "
        f"{r.p99:>7.2f} {r.failures:>6} {r.cpu['server'] * per:>7.2f} "
        f"{pg:>6} {r.cpu['locust'] / r.window * 100:>7.0f}%"
    )


def _external_db() -> bool:
    return bool(os.environ.get("CERTCTL_DATABASE_URL"))


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def run() -> None:
    if importlib.util.find_spec("locust") is None:
        print("locust is not installed: run `nox -s bench -- api` (it installs .[load])")
        return
    root = Path(tempfile.mkdtemp(prefix="certctl-bench-api-"))
    results: dict[tuple[int, str], Result] = {}
    per_call: dict[str, tuple[float, float]] = {}
    started = time.monotonic()
    load_before = _loadavg()
    speed_before = _reference_loop_ms()
    try:
        encryption_key = secrets.token_urlsafe(32)
        database = "CERTCTL_DATABASE_URL" if _external_db() else "embedded PostgreSQL"
        print(
            f"certctl server subprocess, {database}, TLS 1.3 with keep-alive, rate limiting "
            f"OFF for the benchmark, log level warning; locust {_locust_version()} in a "
            f"separate process, one connection per user; {os.cpu_count()} cores shared by "
            f"server, PostgreSQL and locust; load average before: {load_before}; reference "
            f"loop {speed_before:.0f} ms CPU",
            flush=True,
        )
        for workers in WORKERS:
            work = root / f"workers-{workers}"
            with _server(work, root / "tls", workers, encryption_key) as server:
                if workers == 1:
                    per_call = _per_call_cpu(server)
                for scenario in SCENARIOS:
                    result = _locust(server, scenario, root)
                    results[(workers, scenario.key)] = result
                    print(
                        f"  workers={workers} {scenario.label}: {result.rps:,.0f} req/s, "
                        f"p99 {result.p99:.2f} ms",
                        flush=True,
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _report(
        results,
        per_call,
        time.monotonic() - started,
        f"{load_before}; reference loop {speed_before:.0f} ms CPU",
    )


def _locust_version() -> str:
    from locust import __version__

    return str(__version__)


def _report(
    results: dict[tuple[int, str], Result],
    per_call: dict[str, tuple[float, float]],
    elapsed: float,
    before: str,
) -> None:
    print()
    print(
        f"{'scenario':<32} {'wk':>2} {'users':>5} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'fails':>6} {'srv CPU':>7} {'pg CPU':>6} {'locust':>8}"
    )
    by_key = {s.key: s for s in SCENARIOS}
    for workers in WORKERS:
        for scenario in SCENARIOS:
            r = results[(workers, scenario.key)]
            print(_row(scenario.label, workers, scenario.users, r))
    print(
        "(percentiles over each run minus its first "
        f"{WARMUP_SECONDS:.0f} s; srv/pg CPU = ms of CPU per request in the server processes "
        "and in PostgreSQL; locust = its CPU as % of one core)"
    )
    print()
    print("agent mix per call (p50 / p99 ms):")
    for workers in WORKERS:
        for key in ("mix-fixed", "mix-sat"):
            calls = ", ".join(
                f"{name} {p50:.2f}/{p99:.2f} (n={count})"
                for name, (count, p50, p99) in results[(workers, key)].by_name.items()
            )
            print(f"  workers={workers} {by_key[key].label}: {calls}")
    print()
    print("locust's own CSV, aggregated row over the whole run (whole-ms percentiles):")
    for workers in WORKERS:
        for scenario in SCENARIOS:
            row = results[(workers, scenario.key)].csv_row
            if row:
                print(
                    f"  workers={workers} {scenario.label}: {int(row['Request Count']):,} "
                    f"requests, {int(row['Failure Count'])} failures, "
                    f"{float(row['Requests/s']):,.0f} req/s, p50 {row['50%']} ms, "
                    f"p99 {row['99%']} ms"
                )
    print()
    print("ratio agent mix / floor (same workers, same run):")
    for workers in WORKERS:
        ff, mf = results[(workers, "floor-fixed")], results[(workers, "mix-fixed")]
        fs, ms = results[(workers, "floor-sat")], results[(workers, "mix-sat")]
        print(
            f"  workers={workers}: @100/s p50 {mf.p50 / ff.p50:.1f}x, p99 {mf.p99 / ff.p99:.1f}x; "
            f"saturation throughput {ms.rps / fs.rps:.2f}x ({ms.rps:,.0f} vs {fs.rps:,.0f} "
            f"req/s), p99 {ms.p99 / fs.p99:.1f}x; server CPU per request "
            f"{_cpu_per(ms, 'server') / _cpu_per(fs, 'server'):.1f}x "
            f"({_cpu_per(ms, 'server'):.2f} vs {_cpu_per(fs, 'server'):.2f} ms), plus "
            f"{_cpu_per(ms, 'postgres'):.2f} ms in PostgreSQL"
        )
    print()
    print(
        f"CPU per call, one call at a time on one connection (workers=1, median of "
        f"{PER_CALL_CYCLES}):"
    )
    floor = per_call.get("GET /health (floor)", (0.0, 0.0))[0]
    for label, (srv, pg) in per_call.items():
        pg_text = "n/a" if _external_db() else f"{pg * 1000:5.2f} ms"
        print(
            f"  {label:<40} server {srv * 1000:5.2f} ms ({srv / floor:4.1f}x the floor), "
            f"PostgreSQL {pg_text}"
        )
    print()
    print("targets (agent mix):")
    for workers in WORKERS:
        mf, ms = results[(workers, "mix-fixed")], results[(workers, "mix-sat")]
        print(
            f"  workers={workers}: p99 at 100 req/s {mf.p99:.2f} ms (target <= "
            f"{TARGET_P99_FIXED_MS:g} ms; Go implementation {GO_P99_FIXED_MS} ms): "
            f"{_verdict(mf.p99 <= TARGET_P99_FIXED_MS)}; saturation {ms.rps:,.0f} req/s with "
            f"p99 {ms.p99:.2f} ms (target >= {TARGET_SATURATION_RPS:,.0f} req/s with p99 <= "
            f"{TARGET_P99_SATURATION_MS:g} ms): "
            f"{_verdict(ms.rps >= TARGET_SATURATION_RPS and ms.p99 <= TARGET_P99_SATURATION_MS)}"
        )
    warnings = sorted({w for r in results.values() for w in r.warnings})
    for warning in warnings:
        print(f"locust: {warning}")
    print(
        f"before: load average {before}; after: load average {_loadavg()}; reference "
        f"loop {_reference_loop_ms():.0f} ms CPU; {elapsed:.0f} s in all"
    )


def _cpu_per(result: Result, name: str) -> float:
    return result.cpu[name] * 1000 / max(result.requests, 1)
