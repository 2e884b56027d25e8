"""What an agent costs the control plane, short polls against long polls, and how many
agents one replica holds: ``nox -s bench -- fleet-api``.

A real ``certctl server`` (two workers, embedded PostgreSQL or ``CERTCTL_DATABASE_URL``,
rate limiting off) is driven by ``loadtest/fleet.py`` in a separate process: trio, raw TLS
and h11, one task and one keep-alive connection per simulated agent (why not locust: see
that file). The agents are registered once (``--registry``) and reused by every run.

1. **Idle cost**, the same N agents under each protocol, no work: server and PostgreSQL
   CPU-seconds per agent-hour over a window of ``IDLE_SECONDS``, sampled from ``/proc``.
   The short-poll protocol (today's agents, and the upstream Go agent's: a poll every
   30 s, a heartbeat every 60 s) is the baseline; the ratio is long / short.
2. **Delivery**, the same fleets while an operator queues deployments at ``WORK_RATE``
   per second: job created (the deploy call returned) → the agent's poll brought it,
   p50/p99, and the errors.
3. **Capacity**, N stepped up per protocol (bounded in time): the largest N with p99
   delivery ≤ 2 s and no error, with the server's RSS at each step.

Nothing here asserts on time; the figures and verdicts are printed for docs/performance.md.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.api import CPUSampler, _loadavg, _parents, _postmaster, _reference_loop_ms, _server
from certctl.testing.server import ServerProcess, child_env

GENERATOR = Path(__file__).resolve().parent.parent / "loadtest" / "fleet.py"
WORKERS = 2
COMPARE_AGENTS = int(os.environ.get("CERTCTL_BENCH_FLEET_AGENTS", "2000"))
IDLE_SECONDS = float(os.environ.get("CERTCTL_BENCH_FLEET_IDLE", "120"))
WORK_SECONDS = 60.0
WORK_RATE = 2.0
STEP_SECONDS = 75.0


def _steps(variable: str, default: str) -> tuple[int, ...]:
    return tuple(int(n) for n in os.environ.get(variable, default).split(","))


STEPS = {
    "short": _steps("CERTCTL_BENCH_FLEET_SHORT", "1000,2000,4000,8000"),
    "long": _steps("CERTCTL_BENCH_FLEET_LONG", "2500,5000,10000"),
}
P99_BOUND = 2.0
TARGET_RATIO = 1 / 20
TARGET_AGENTS = 10_000
TARGET_RSS_GIB = 2.0


@dataclass
class Window:
    """One phase of a generator run, with what the server and PostgreSQL spent in it."""

    row: dict[str, Any]
    cpu: dict[str, float]
    rss_kb: int

    @property
    def seconds(self) -> float:
        return float(self.row["t_end"] - self.row["t_start"])

    def per_agent_hour(self, name: str) -> float:
        return self.cpu[name] / max(1, self.row["connected"]) / self.seconds * 3600


@dataclass
class Run:
    protocol: str
    windows: dict[str, Window] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)


def _rss_kb(root: int) -> int:
    """Resident memory of ``root`` and its descendants (the server and its workers)."""
    children, pids, total = _parents(), [root], 0
    while pids:
        pid = pids.pop()
        pids.extend(children.get(pid, ()))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def _generate(
    server: ServerProcess, registry: Path, protocol: str, phases: list[str], *extra: str
) -> Run:
    """One run of ``loadtest/fleet.py``; the server's CPU, PostgreSQL's and the server's
    RSS are read over each phase it announces on stdout."""
    env = {
        **child_env(),
        "CERTCTL_SERVER_CA_BUNDLE_PATH": str(server.ca_path),
        "CERTCTL_AGENT_BOOTSTRAP_TOKEN": server.bootstrap_token,
        "CERTCTL_LOAD_API_KEY": server.api_key,
    }
    command = [
        sys.executable, str(GENERATOR), "--host", server.url, "--registry", str(registry),
        "--protocol", protocol, *(a for p in phases for a in ("--phase", p)), *extra,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    roots = {
        "server": server.process.pid,
        "postgres": _postmaster(server),
        "generator": process.pid,
    }
    run = Run(protocol)
    rss: dict[str, int] = {}
    assert process.stdout is not None
    with CPUSampler(roots) as sampler:
        for line in process.stdout:
            event = json.loads(line)
            if event["event"] == "phase_end":
                rss[event["phase"]] = _rss_kb(server.process.pid)
            elif event["event"] == "result":
                run.result = event
        process.wait()
    if "error" in run.result or process.returncode != 0:
        raise RuntimeError(f"loadtest/fleet.py failed ({process.returncode}): {run.result}")
    for row in run.result["phases"]:
        if row["kind"] == "window":
            cpu = sampler.between(row["t_start"], row["t_end"])
            run.windows[row["name"]] = Window(row, cpu, rss.get(row["name"], 0))
    return run


def _register(server: ServerProcess, registry: Path, agents: int) -> float:
    started = time.monotonic()
    _generate(server, registry, "long", [f"setup:{agents}:0"], "--register-only")
    return time.monotonic() - started


def run() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the server
    root = Path(tempfile.mkdtemp(prefix="certctl-bench-fleet-"))
    registry = root / "agents.json"
    largest = max(COMPARE_AGENTS, *STEPS["short"], *STEPS["long"])
    load_before, speed = _loadavg(), _reference_loop_ms()
    started = time.monotonic()
    database = "CERTCTL_DATABASE_URL" if os.environ.get("CERTCTL_DATABASE_URL") else "embedded"
    print(
        f"certctl server subprocess, {WORKERS} workers, {database} PostgreSQL, "
        f"TLS 1.3 keep-alive, rate limiting off; loadtest/fleet.py (trio + h11) in a separate "
        f"process; {os.cpu_count()} cores shared by all three; RLIMIT_NOFILE {hard}; load "
        f"average before: {load_before}; reference loop {speed:.0f} ms CPU",
        flush=True,
    )
    runs: dict[str, Run] = {}
    try:
        settings_root = root / "server"
        with _server(settings_root, root / "tls", WORKERS, secrets.token_urlsafe(32)) as server:
            took = _register(server, registry, largest)
            print(
                f"  registered {largest} agents in {took:.0f} s (setup, not measured)", flush=True
            )
            for protocol in ("short", "long"):
                phases = [
                    f"idle:{COMPARE_AGENTS}:{IDLE_SECONDS:g}:0",
                    f"work:{COMPARE_AGENTS}:{WORK_SECONDS:g}:{WORK_RATE:g}",
                ]
                runs[protocol] = _generate(server, registry, protocol, phases)
                _progress(runs[protocol])
                steps = [f"n{n}:{n}:{STEP_SECONDS:g}:{WORK_RATE:g}" for n in STEPS[protocol]]
                runs[f"{protocol}-steps"] = _generate(server, registry, protocol, steps)
                _progress(runs[f"{protocol}-steps"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _report(runs, time.monotonic() - started, f"{load_before}; reference loop {speed:.0f} ms")


def _progress(run: Run) -> None:
    for name, window in run.windows.items():
        row = window.row
        p99 = row["delivery_p99"]
        print(
            f"  {run.protocol} {name}: {row['connected']} agents, "
            f"server {window.cpu['server']:.1f} s CPU, p99 "
            f"{'-' if p99 is None else f'{p99:.2f} s'}, {row['errors_total']} errors",
            flush=True,
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}"


def _ok(window: Window) -> bool:
    row = window.row
    p99 = row["delivery_p99"]
    return (
        row["errors_total"] == 0
        and row["undelivered"] == 0
        and p99 is not None
        and p99 <= P99_BOUND
        and row["connected"] >= row["agents"]
    )


def _report(runs: dict[str, Run], seconds: float, conditions: str) -> None:
    short, long = runs["short"], runs["long"]
    print(f"\nfleet-api ({seconds / 60:.0f} min; load average before, {conditions})")
    print("\n1. Idle cost: CPU-seconds per agent-hour (no work queued)")
    print(f"{'protocol':<44} {'agents':>6} {'req/s':>7} {'server':>8} {'postgres':>9} {'total':>8}")
    totals = {}
    for label, run in (
        ("short polls (wait=0, 30 s poll, 60 s heartbeat)", short),
        ("long polls (wait=55, facts in headers)", long),
    ):
        w = run.windows["idle"]
        server, pg = w.per_agent_hour("server"), w.per_agent_hour("postgres")
        totals[run.protocol] = server + pg
        rate = w.row["requests_total"] / w.seconds
        print(
            f"{label:<44} {w.row['connected']:>6} {rate:>7.1f} {server:>8.3f} {pg:>9.3f} "
            f"{server + pg:>8.3f}"
        )
    ratio = totals["long"] / totals["short"] if totals["short"] else float("nan")
    print(
        f"ratio long / short: {ratio:.3f} (1/{1 / ratio:.0f}); target ≤ 1/20: "
        f"{'MET' if ratio <= TARGET_RATIO else 'NOT MET'}"
    )
    print(
        "upstream certctl (Go) polls every 30 s and heartbeats every 60 s: the short-poll "
        f"accounting, {totals['short']:.3f} CPU-s per agent-hour here (before its own "
        "per-request costs, which this run does not measure)"
    )
    print(f"\n2. Delivery at {WORK_RATE:g} deploys/s (ms; job created -> the poll returned it)")
    print(
        f"{'protocol':<10} {'agents':>6} {'p50':>7} {'p99':>7} {'max':>7} {'errors':>6} "
        f"{'rss MiB':>8}"
    )
    for run in (short, long):
        w = run.windows["work"]
        row = w.row
        print(
            f"{run.protocol:<10} {row['connected']:>6} {_ms(row['delivery_p50']):>7} "
            f"{_ms(row['delivery_p99']):>7} {_ms(row['delivery_max']):>7} "
            f"{row['errors_total']:>6} {w.rss_kb / 1024:>8.0f}"
        )
    print(f"\n3. Capacity: N stepped up, {STEP_SECONDS:g} s each at {WORK_RATE:g} deploys/s")
    print(
        f"{'protocol':<10} {'agents':>6} {'connected':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'server CPU%':>11} {'rss MiB':>8} {'ok':>4}"
    )
    reached: dict[str, int] = {}
    rss_at: dict[str, float] = {}
    for protocol in ("short", "long"):
        for w in runs[f"{protocol}-steps"].windows.values():
            row = w.row
            good = _ok(w)
            if good:
                reached[protocol] = max(reached.get(protocol, 0), row["agents"])
                rss_at[protocol] = w.rss_kb / 1024 / 1024
            print(
                f"{protocol:<10} {row['agents']:>6} {row['connected']:>9} "
                f"{_ms(row['delivery_p50']):>7} {_ms(row['delivery_p99']):>7} "
                f"{row['errors_total']:>6} {w.cpu['server'] / w.seconds * 100:>10.0f}% "
                f"{w.rss_kb / 1024:>8.0f} {'yes' if good else 'no':>4}"
            )
    for protocol in ("short", "long"):
        print(
            f"largest N with p99 ≤ {P99_BOUND:g} s and 0 errors, {protocol}: "
            f"{reached.get(protocol, 0)} (of the steps {', '.join(map(str, STEPS[protocol]))})"
        )
    held = reached.get("long", 0)
    rss = rss_at.get("long", 0.0)
    print(
        f"target ≥ {TARGET_AGENTS} agents on one replica, RSS ≤ {TARGET_RSS_GIB:g} GiB: "
        f"{'MET' if held >= TARGET_AGENTS and rss <= TARGET_RSS_GIB else 'NOT MET'} "
        f"({held} agents, {rss:.2f} GiB)"
    )
