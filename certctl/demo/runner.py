"""``certctl demo``: a control plane, three agents and a seeded inventory on this machine.

The demo is an operator and a fleet in one command, and nothing more: the server and the
agents are the real ``certctl server`` and ``certctl agent`` processes talking HTTPS (TLS
1.3, trusting a CA made for this run), and the demo itself only calls the REST API with
the API key it prints. Secrets are generated for each run, so the processes run with
every production check on (demo mode, ``CERTCTL_DEMO_MODE_ACK``, is not needed: no
example credential is used).

Order: TLS material and env files; the server (embedded PostgreSQL), until ``/ready``;
the agents, until all three have registered; the private NGINX if ``nginx`` is
installed; the inventory; then the live view until ``--duration`` passes or SIGINT or
SIGTERM arrives. Stopping is the reverse: agents (so in-flight deploys report), a last
snapshot, NGINX, the server. The exit status is 1 when nothing was issued or deployed,
a deployment failed or a process ended badly, so a broken demo never passes silently.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from certctl import config
from certctl.agent.policy import write_policy
from certctl.demo.api import Api, ApiError
from certctl.demo.live import FleetState, View, clock, summarize
from certctl.demo.nginx import DemoNginx, NginxFailed, find_nginx
from certctl.demo.policy import agent_policy
from certctl.demo.seed import AGENTS, CERTIFICATES, Inventory, seed
from certctl.testing import processes
from certctl.testing.processes import Child, StartFailed
from certctl.testing.server import start_certctl, tls_material, trusting, write_env

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
HOST = "127.0.0.1"
AGENT_INTERVAL = "2s"
REGISTER_TIMEOUT = 60.0
REFRESH = 1.0
API_FAILURES = 10  # consecutive failed refreshes before the demo gives up
PLAIN_EVERY = 5.0
RENEW_FIRST = 2  # certificates renewed early in the first round, then in each later one
RENEW_LATER = 2
RENEW_EVERY = 20.0
RENEW_MARGIN = 12.0  # no round this close to the end: the renewal would not finish
RENEW_UNTIL = 300.0  # then only the scheduler renews (the ten-minute certificates)
# How a child stopped by our SIGTERM exits: 0 normally, or killed by the signal itself
# when it arrived before the child had installed its handler (during start-up).
STOPPED = frozenset({0, -signal.SIGTERM})
NGINX_SITES = {"www": "www.example.com", "shop": "shop.example.com"}

Say = Callable[[str], None]


def _say(line: str) -> None:
    print(line, flush=True)


def _refuse(line: str) -> None:
    print(f"certctl: {line}", file=sys.stderr, flush=True)


class Stop:
    """SIGINT and SIGTERM set a flag the demo polls, so every stop takes the clean path."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: str | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.event.is_set():
            self.signal = signal.Signals(signum).name
            self.event.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stop]:
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def requested(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds: float) -> bool:
        return self.event.wait(max(seconds, 0))


@dataclass
class Demo:
    directory: Path
    port: int
    duration: float | None
    stop: Stop
    say: Say = _say
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    bootstrap_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    encryption_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    server: Child | None = None
    agents: list[Child] = field(default_factory=list)
    nginx: DemoNginx | None = None
    planned_nginx: DemoNginx | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    def api(self) -> Api:
        return Api(self.url, self.ca_path, self.api_key)

    # -- start --------------------------------------------------------------------------

    def start_server(self) -> bool:
        _, cert, key = tls_material(self.directory / "tls")
        values = {
            "CERTCTL_SERVER_HOST": HOST,
            "CERTCTL_SERVER_PORT": str(self.port),
            "CERTCTL_SERVER_TLS_CERT_PATH": str(cert),
            "CERTCTL_SERVER_TLS_KEY_PATH": str(key),
            "CERTCTL_API_KEYS": f"demo:{self.api_key}:admin",
            "CERTCTL_AGENT_BOOTSTRAP_TOKEN": self.bootstrap_token,
            "CERTCTL_CONFIG_ENCRYPTION_KEY": self.encryption_key,
            "CERTCTL_DATA_DIR": str(self.directory / "server"),
            # The shortest intervals the configuration allows (config.SCHEDULER_MINIMUMS),
            # so that issuance, retries and the renewal scan happen within a short demo.
            "CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL": "1m",
            "CERTCTL_SCHEDULER_JOB_PROCESSOR_INTERVAL": "1s",
            "CERTCTL_SCHEDULER_RETRY_INTERVAL": "5s",
            "CERTCTL_SCHEDULER_AGENT_HEALTH_CHECK_INTERVAL": "5s",
            "CERTCTL_AGENT_OFFLINE_AFTER": "30s",
            # A held poll must end before its agent would count as Offline.
            "CERTCTL_AGENT_POLL_WAIT_MAX": "20s",
            "CERTCTL_LOG_LEVEL": "info",
        }
        env_file = self._env_file("server.env", values, config.Role.SERVER)
        self.say(f"certctl demo: starting the control plane on {self.url} (embedded PostgreSQL)")
        self.server = start_certctl("server", env_file, self.logs / "server.log")
        ready = processes.https_ok(f"{self.url}/ready", trusting(self.ca_path))
        return processes.wait_ready(self.server, ready, cancelled=self.stop.requested)

    def start_agents(self) -> dict[str, str] | None:
        """Start the agents; their ids by name once all have registered (``None``: stopped).

        Each runs with a host policy allowing exactly what the demo deploys through it
        (``certctl.demo.policy``), so NGINX is planned here, before it starts.
        """
        binary = find_nginx()
        if binary is not None:
            self.planned_nginx = DemoNginx(
                binary,
                self.directory / "nginx",
                self.directory / "targets" / AGENTS[0] / "nginx",
                NGINX_SITES,
            )
        for index, name in enumerate(AGENTS):
            home = self.directory / "agents" / name
            home.mkdir(parents=True, exist_ok=True)
            policy = agent_policy(
                self.directory / "targets" / name,
                home / "state",
                self.planned_nginx if index == 0 else None,
            )
            policy_file = write_policy(home / "policy" / "agent-policy.toml", policy)
            values = {
                "CERTCTL_SERVER_URL": self.url,
                "CERTCTL_SERVER_CA_BUNDLE_PATH": str(self.ca_path),
                "CERTCTL_AGENT_BOOTSTRAP_TOKEN": self.bootstrap_token,
                "CERTCTL_AGENT_NAME": name,
                "CERTCTL_DATA_DIR": str(home),
                "CERTCTL_AGENT_STATE_DIR": str(home / "state"),
                "CERTCTL_AGENT_POLL_INTERVAL": AGENT_INTERVAL,
                "CERTCTL_AGENT_HEARTBEAT_INTERVAL": AGENT_INTERVAL,
                "CERTCTL_AGENT_POLICY_FILE": str(policy_file),
                "CERTCTL_LOG_LEVEL": "info",
            }
            env_file = self._env_file(f"{name}.env", values, config.Role.AGENT, home)
            self.agents.append(
                start_certctl("agent", env_file, self.logs / f"{name}.log", name=name)
            )
        deadline = time.monotonic() + REGISTER_TIMEOUT
        with self.api() as api:
            while not self.stop.wait(0.2):
                self._check_children()
                registered = {
                    a["name"]: a["id"] for a in api.items("/api/v1/agents") if a["name"] in AGENTS
                }
                if len(registered) == len(AGENTS):
                    return registered
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(set(AGENTS) - set(registered)))
                    raise StartFailed(
                        f"agents {missing} did not register within {REGISTER_TIMEOUT:g} s; "
                        f"see their logs in {self.logs}"
                    )
        return None

    def start_nginx(self) -> None:
        nginx = self.planned_nginx
        if nginx is None:
            self.say(
                "certctl demo: nginx is not installed, so every target is a File target "
                "(install nginx to see NGINX deploys verified by a TLS handshake)"
            )
            return
        try:
            nginx.start()
        except (NginxFailed, OSError) as exc:
            self.say(f"certctl demo: NGINX is left out: {exc}")
            return
        self.nginx = nginx
        self.say(
            f"certctl demo: NGINX serves {', '.join(NGINX_SITES.values())} on {nginx.url} "
            f"(agent {AGENTS[0]} deploys to it)"
        )

    def _env_file(
        self, name: str, values: dict[str, str], role: config.Role, where: Path | None = None
    ) -> Path:
        """Write an env file after checking it exactly as the process will: a refusal here
        is a bug in the demo, reported with the process's own sentence."""
        config.validate(config.load(values), role=role, now=datetime.now(UTC))
        return write_env((where or self.directory) / name, values)

    def _check_children(self) -> None:
        for child in [c for c in (self.server, *self.agents) if c is not None]:
            child.check_running()

    # -- show ---------------------------------------------------------------------------

    def print_access(self) -> None:
        ca = shlex.quote(str(self.ca_path))
        self.say("")
        self.say(f"  directory        {self.directory}")
        self.say(f"  control plane    {self.url}   (logs in {self.logs})")
        self.say(f"  CA certificate   {self.ca_path}")
        self.say(f"  API key          {self.api_key}   (operator 'demo', admin)")
        self.say(f"  bootstrap token  {self.bootstrap_token}")
        self.say(f"  env files        {self.directory / 'server.env'}, agents/<name>/<name>.env")
        self.say("  host policies    agents/<name>/policy/agent-policy.toml (what each may deploy)")
        self.say("")
        self.say("List the inventory from another shell:")
        self.say(
            f'  curl --cacert {ca} -H "Authorization: Bearer {self.api_key}" '
            f"{self.url}/api/v1/certificates"
        )
        self.say("The README's API tour uses these variables:")
        where = shlex.quote(str(self.directory))
        self.say(
            f"  export DEMO_URL={self.url} DEMO_CA={ca} DEMO_KEY={self.api_key} DEMO_DIR={where}"
        )
        self.say("An agent of your own joins with this env file (see docs/agent.md):")
        self.say(f"  CERTCTL_SERVER_URL={self.url}")
        self.say(f"  CERTCTL_SERVER_CA_BUNDLE_PATH={self.ca_path}")
        self.say(f"  CERTCTL_AGENT_BOOTSTRAP_TOKEN={self.bootstrap_token}")
        self.say("")

    def watch(self, api: Api, inventory: Inventory, started: float) -> FleetState | None:
        """The live view until the duration passes or a stop is requested."""
        view = View(inventory, self.url, self.duration, self.nginx.url if self.nginx else None)
        tty = sys.stdout.isatty()
        progress = _Progress()
        snap: FleetState | None = None
        with _live(tty) as show:
            while True:
                elapsed = time.monotonic() - started
                self._check_children()
                snap = self._refresh(api, inventory, progress, elapsed) or snap
                for note in progress.take_notes():
                    view.notes = [*view.notes[-2:], note]
                    if not tty:
                        self.say(note)
                if snap is not None and tty:
                    show(view.render(snap, elapsed))
                elif snap is not None and elapsed - progress.last_line >= PLAIN_EVERY:
                    self.say(view.line(snap, elapsed))
                    progress.last_line = elapsed
                remaining = None if self.duration is None else self.duration - elapsed
                if remaining is not None and remaining <= 0:
                    return snap
                if self.stop.wait(REFRESH if remaining is None else min(REFRESH, remaining)):
                    return snap

    def _refresh(
        self, api: Api, inventory: Inventory, progress: _Progress, elapsed: float
    ) -> FleetState | None:
        """One snapshot, and an early-renewal round when one is due; ``None`` when the API
        call failed (shown as a note and retried on the next refresh, up to a limit: a
        busy machine or a rate limit must not end the demo, a dead server is caught by
        ``_check_children``)."""
        try:
            snap = FleetState.take(api)
            if self._renewal_due(snap, elapsed, progress.renewed_at):
                count = RENEW_FIRST if progress.renewed_at is None else RENEW_LATER
                progress.notes.append(self._renew(api, snap, inventory, count, elapsed))
                progress.renewed_at = elapsed
        except ApiError as exc:
            progress.failures += 1
            if progress.failures >= API_FAILURES:
                raise
            progress.notes.append(f"[{clock(elapsed)}] {exc}")
            return None
        progress.failures = 0
        if elapsed > RENEW_UNTIL and progress.renewed_at is not None and not progress.handed_over:
            progress.handed_over = True
            progress.notes.append(
                f"[{clock(elapsed)}] no more early renewals; the scheduler renews the "
                "ten-minute certificates by itself, about every seven minutes"
            )
        return snap

    def _renewal_due(self, snap: FleetState, elapsed: float, last: float | None) -> bool:
        if self.duration is not None and self.duration - elapsed < RENEW_MARGIN:
            return False
        if not snap.certificate_counts().get("Active"):
            return False
        if elapsed > RENEW_UNTIL:
            return False
        if last is None:
            halfway = self.duration / 2 if self.duration is not None else RENEW_EVERY
            return snap.settled() or elapsed >= halfway
        return elapsed - last >= RENEW_EVERY

    def _renew(
        self, api: Api, snap: FleetState, inventory: Inventory, count: int, elapsed: float
    ) -> str:
        """Renew the 2-day certificates closest to expiry now, instead of in a day (the
        ten-minute ones are left to the scheduler, which renews them by itself)."""
        due = [
            c
            for c in snap.closest_to_expiry(len(snap.certificates))
            if c["status"] == "Active" and inventory.lifetimes.get(c["id"]) == "2d"
        ]
        names = []
        for cert in due[:count]:
            api.post(f"/api/v1/certificates/{cert['id']}/renew", {"force": True})
            names.append(cert["common_name"])
        if not names:
            return ""
        return (
            f"[{clock(elapsed)}] renewing early (POST /api/v1/certificates/{{id}}/renew "
            f'{{"force": true}}) the 2-day certificates closest to expiry: {", ".join(names)}'
        )

    # -- stop ---------------------------------------------------------------------------

    def stop_agents(self) -> None:
        running = {child.name for child in self.agents if child.running}
        for name, status in processes.stop_all(self.agents).items():
            if name in running and status not in STOPPED:
                self.problems.append(
                    f"agent {name} exited with status {status} (log: {self.logs / name}.log)"
                )

    def stop_rest(self) -> None:
        """NGINX and the server; a process that had already exited was reported then."""
        if self.nginx is not None:
            self.nginx.stop()
        if self.server is not None and self.server.running:
            status = self.server.stop()
            if status not in STOPPED:
                self.problems.append(
                    f"the server exited with status {status} (log: {self.server.log_path})"
                )


@dataclass
class _Progress:
    """What the live loop remembers between refreshes."""

    renewed_at: float | None = None
    handed_over: bool = False
    failures: int = 0
    last_line: float = -PLAIN_EVERY
    notes: list[str] = field(default_factory=list)

    def take_notes(self) -> list[str]:
        notes, self.notes = [n for n in self.notes if n], []
        return notes


@contextlib.contextmanager
def _live(enabled: bool) -> Iterator[Callable[[Any], None]]:
    if not enabled:
        yield lambda renderable: None
        return
    from rich.live import Live  # noqa: PLC0415 - only on a terminal

    with Live(auto_refresh=False, transient=False) as live:
        yield lambda renderable: live.update(renderable, refresh=True)


def default_directory() -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = config.default_data_dir() / "demo"
    candidate, n = base / stamp, 1
    while candidate.exists():
        n += 1
        candidate = base / f"{stamp}-{n}"
    return candidate


def _usable_directory(directory: Path) -> str | None:
    """Why ``directory`` cannot hold a new demo, or ``None``."""
    if directory.exists() and not directory.is_dir():
        return f"--dir {directory} is a file; give a new or empty directory."
    if directory.is_dir() and any(directory.iterdir()):
        return (
            f"--dir {directory} is not empty; give a new or empty directory (every demo run "
            "makes fresh secrets, and a previous run's data would not open with them)."
        )
    return None


def run_demo(*, duration: float | None, directory: Path | None, port: int) -> int:
    """Run the demo; the process exit status (see the module docstring)."""
    where = (directory or default_directory()).absolute()
    refusal = _usable_directory(where)
    if refusal is not None:
        _refuse(refusal)
        return EXIT_USAGE
    if processes.port_in_use(HOST, port):
        _refuse(
            f"port {port} on {HOST} is already in use (another certctl demo or server?); "
            f"pass --port with a free port, e.g. --port {processes.free_port()}."
        )
        return EXIT_FAILED
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    with Stop().installed() as stop:
        demo = Demo(where, port, duration, stop)
        final: FleetState | None = None
        try:
            final = _run(demo)
        except (StartFailed, ApiError, config.ConfigError, OSError) as exc:
            demo.problems.append(str(exc))
        finally:
            if demo.agents:
                demo.say("certctl demo: stopping the agents, NGINX and the control plane ...")
            demo.stop_agents()
            if final is not None and demo.server is not None and demo.server.running:
                with contextlib.suppress(ApiError), demo.api() as api:
                    final = FleetState.take(api)
            demo.stop_rest()
    return _conclude(demo, final)


def _run(demo: Demo) -> FleetState | None:
    if not demo.start_server():
        return None
    started = time.monotonic()
    demo.print_access()
    agent_ids = demo.start_agents()
    if agent_ids is None:
        return None
    demo.say(f"certctl demo: agents {', '.join(AGENTS)} registered")
    demo.start_nginx()
    with demo.api() as api:
        inventory = seed(api, agent_ids, demo.directory / "targets", demo.nginx)
        demo.say(
            f"certctl demo: created {len(CERTIFICATES)} certificates for 3 teams "
            f"with {len(inventory.targets)} targets; the agents issue and deploy them now"
        )
        if demo.duration is not None:
            demo.say(
                f"certctl demo: stops by itself {demo.duration:g} s after the control plane "
                "came up (--duration); Ctrl-C stops it sooner"
            )
        return demo.watch(api, inventory, started)


def _conclude(demo: Demo, final: FleetState | None) -> int:
    if final is not None:
        for line in summarize(final):
            demo.say(f"certctl demo: {line}")
        counts = final.certificate_counts()
        deploys = final.job_counts("Deployment")
        if not counts.get("Active") and not counts.get("RenewalInProgress"):
            demo.problems.append("no certificate was issued")
        if not deploys.get("Completed"):
            demo.problems.append("no deployment completed")
        if deploys.get("Failed"):
            demo.problems.append(
                f"{deploys['Failed']} deployment(s) failed; GET /api/v1/jobs?status=Failed "
                "shows why"
            )
    elif not demo.problems:
        demo.problems.append("the demo stopped before its inventory was created")
    how = f"stopped by {demo.stop.signal}" if demo.stop.signal else "stopped"
    demo.say(f"certctl demo: {how}; its files stay in {demo.directory}")
    for problem in demo.problems:
        _refuse(problem)
    return EXIT_FAILED if demo.problems or final is None else EXIT_OK
