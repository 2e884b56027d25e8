"""deploy/docker-compose.yml, run as local processes: the same services, commands,
environment and healthchecks, in the order its ``depends_on`` gives, without a Docker
engine. Only what a container would make different is rewritten:

- named volumes, bind mounts and tmpfs become temporary directories (container paths in
  environment values, arguments and bind-mounted files point at them);
- the bundled ``postgres`` service is the embedded PostgreSQL (``pg_cluster``), so the
  server's ``CERTCTL_DATABASE_URL`` leads there, with the role and password of the file;
- service names (``certctl-server``) become 127.0.0.1 and published ports free ones;
- ``certctl`` (the images' entrypoint, after tini) is this virtualenv's executable.

Secrets come from a test ``.env`` filled in from deploy/.env.example, interpolated as
compose does. The stack must then do what compose promises: the TLS init completes with
exit 0, the server's own healthcheck passes, the agent's does, the agent registers, and a
certificate deploys to a File target in the agent's deploy volume.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from conftest_store import Cluster
from cryptography.hazmat.primitives import serialization
from test_image_healthcheck import image_env, rewrite_paths
from waiting import wait_for

from certctl.config import read_env_file
from certctl.pki.pem import fingerprint_sha256, load_certificates, load_private_key
from certctl.testing import processes
from certctl.testing.server import child_env, trusting, write_env

pytestmark = pytest.mark.process  # a minute of processes: run by `nox -s integration`

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / ".env.example"
CERTCTL = Path(sys.executable).parent / "certctl"
BUNDLED_DATABASE = "postgres"  # the service the embedded PostgreSQL stands in for
DEPLOY_ROOT = "/etc/ssl/certctl"  # the agent's deploy volume, where File targets write
PROBES = 300  # healthcheck runs before a service counts as never healthy
PROBE_PAUSE = 0.2  # seconds between two runs: a pause, not a deadline
ONE_SHOT_TIMEOUT = 120
INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)")

# --------------------------------------------------------------------------- compose semantics


class MissingVariable(Exception):
    """A ``${VAR:?message}`` whose variable is unset (or empty): compose refuses to start."""


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
    ``${VAR-default}``, ``${VAR:?message}`` and ``${VAR?message}``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3) or ""
        value = variables.get(name)
        missing = value is None or (value == "" and operator in {":-", ":?"})
        if operator in {":?", "?"} and missing:
            raise MissingVariable(f"{name}: {argument}")
        if operator in {":-", "-"} and missing:
            return argument
        return value or ""

    return INTERPOLATION.sub(substitute, text)


def interpolated(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [interpolated(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(value, variables) for key, value in node.items()}
    return node


def start_order(services: Mapping[str, Any]) -> list[str]:
    """Services so that each comes after everything it ``depends_on`` (file order otherwise)."""
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
        if name in ordered:
            return
        for dependency in depends_on(services[name]):
            visit(dependency, (*path, name))
        ordered.append(name)

    for name in services:
        visit(name, ())
    return ordered


def depends_on(spec: Mapping[str, Any]) -> dict[str, str]:
    """``{service: condition}``; the list form means ``service_started``."""
    raw = spec.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (cond or {}).get("condition", "service_started") for name, cond in raw.items()}


def container_ports(spec: Mapping[str, Any]) -> list[int]:
    ports = []
    for entry in [*spec.get("ports", []), *spec.get("expose", [])]:
        ports.append(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


# --------------------------------------------------------------------------- the stack


@dataclass
class Service:
    name: str
    spec: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    child: processes.Child | None = None
    exit_code: int | None = None
    probes: int = 0

    def host_path(self, container: str) -> Path:
        rewritten = rewrite_paths(container, self.paths)
        assert rewritten != container, f"{self.name} has no volume holding {container}"
        return Path(rewritten)

    def log(self) -> str:
        return processes.tail(self.child.log_path, 60) if self.child else ""


class Stack:
    """The compose file's services as processes under ``root``."""

    def __init__(self, root: Path, variables: Mapping[str, str], cluster: Cluster) -> None:
        self.root = root
        self.cluster = cluster
        document = yaml.safe_load(COMPOSE.read_text())
        self.document = interpolated(document, variables)
        specs: dict[str, Any] = self.document["services"]
        self.ports = {
            name: {port: processes.free_port() for port in container_ports(spec)}
            for name, spec in specs.items()
        }
        self.services = {name: Service(name, spec) for name, spec in specs.items()}
        self.order = start_order(specs)
        self.started: list[Service] = []
        self.databases: list[str] = []
        self.roles: list[str] = []

    # -- rewriting -----------------------------------------------------------------------

    def _mount(self, service: Service) -> None:
        """Named volumes, bind mounts and tmpfs as directories under ``root``."""
        volumes = self.document.get("volumes") or {}
        for entry in service.spec.get("volumes", []):
            source, target = str(entry).split(":")[:2]
            if source in volumes:
                host = self.root / "volumes" / source
                host.mkdir(parents=True, exist_ok=True)
            else:
                host = self._bind(service, COMPOSE.parent / source)
            service.paths[target] = host
        for target in service.spec.get("tmpfs", []):
            host = self.root / "tmpfs" / service.name / target.strip("/")
            host.mkdir(parents=True, exist_ok=True)
            service.paths[target] = host

    def _bind(self, service: Service, source: Path) -> Path:
        """A bind-mounted file, copied with the service's container paths rewritten in it
        once every mount is known (the host policy names the deploy volume's path)."""
        assert source.is_file(), f"{service.name} bind-mounts {source}, which is missing"
        folder = self.root / "binds" / service.name
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        copy = folder / source.name
        shutil.copyfile(source, copy)
        copy.chmod(0o644)
        return copy

    def _rewrite(self, service: Service, value: str, key: str | None = None) -> str:
        value = rewrite_paths(value, service.paths)
        for name, ports in self.ports.items():
            for inside, outside in ports.items():
                value = re.sub(
                    rf"(?<![\w.-]){re.escape(name)}:{inside}\b", f"127.0.0.1:{outside}", value
                )
        mine = self.ports[service.name]
        if key == "CERTCTL_SERVER_HOST" and value in {"0.0.0.0", "::"}:
            return "127.0.0.1"
        if key == "CERTCTL_SERVER_PORT" and value.isdigit() and int(value) in mine:
            return str(mine[int(value)])
        if key == "CERTCTL_DATABASE_URL" and urlsplit(value).hostname == BUNDLED_DATABASE:
            return self._embedded_url(value)
        return value

    def _embedded_url(self, url: str) -> str:
        """The bundled PostgreSQL's role and password, on a fresh embedded database."""
        parts = urlsplit(url)
        user, password = parts.username or "postgres", parts.password or ""
        quoted = password.replace("'", "''")
        exists = self.cluster.run("postgres", f"SELECT 1 FROM pg_roles WHERE rolname = '{user}'")
        if not exists[0]:
            # The postgres image makes POSTGRES_USER a superuser; so does this.
            self.cluster.run(
                "postgres", f"CREATE ROLE \"{user}\" LOGIN SUPERUSER PASSWORD '{quoted}'"
            )
            self.roles.append(user)
        database = f"compose_{secrets.token_hex(6)}"
        self.cluster.run("postgres", f'CREATE DATABASE "{database}" OWNER "{user}"')
        self.databases.append(database)
        sockets = parse_qs(urlsplit(self.cluster.dsn("postgres")).query)["host"][0]
        return f"postgresql://{user}:{password}@/{database}?host={sockets}"

    def _prepare(self, service: Service) -> None:
        spec = service.spec
        self._mount(service)
        for copy in (p for p in service.paths.values() if p.parent.parent.name == "binds"):
            copy.write_text(rewrite_paths(copy.read_text(), service.paths))
        dockerfile = COMPOSE.parent / spec["build"]["context"] / spec["build"]["dockerfile"]
        rootfs = self.root / "rootfs" / service.name
        env = child_env()
        for key, raw in image_env(dockerfile).items():
            # Image paths outside this service's volumes lie on its (read-only) root fs.
            value = self._rewrite(service, raw, key)
            if value.startswith("/") and not value.startswith(str(self.root)):
                value = str(rootfs / value.lstrip("/"))
            env[key] = value
        for key, given in (spec.get("environment") or {}).items():
            value = str(given)
            if value.startswith("/"):
                assert rewrite_paths(value, service.paths) != value, (
                    f"{service.name}: {key}={value} is not on a volume, but the root file "
                    "system is read-only"
                )
            env[key] = self._rewrite(service, value, key)
        env["PATH"] = f"{CERTCTL.parent}:/usr/local/bin:/usr/bin:/bin"
        for key in ("HOME", "TMPDIR"):
            if key in env:
                Path(env[key]).mkdir(parents=True, exist_ok=True)
        service.env = env
        entrypoint = spec.get("entrypoint") or ["certctl"]
        argv = [self._rewrite(service, str(a)) for a in [*entrypoint, *spec.get("command", [])]]
        service.argv = [str(CERTCTL) if a == "certctl" else a for a in argv]

    # -- running -------------------------------------------------------------------------

    def up(self) -> None:
        """``docker compose up --wait``: each service once its dependencies' conditions
        hold, then every healthcheck passes."""
        satisfied: set[tuple[str, str]] = set()
        for name in self.order:
            for dependency, condition in depends_on(self.services[name].spec).items():
                if (dependency, condition) not in satisfied:
                    self.satisfy(self.services[dependency], condition)
                    satisfied.add((dependency, condition))
            self.start(self.services[name])
        for service in self.started:
            if "healthcheck" in service.spec:
                self.wait_healthy(service)

    def start(self, service: Service) -> None:
        if service.name == BUNDLED_DATABASE:
            return  # the embedded cluster is already serving
        self._prepare(service)
        log = self.root / "logs" / f"{service.name}.log"
        service.child = processes.spawn(service.name, service.argv, log, env=service.env)
        self.started.append(service)

    def satisfy(self, service: Service, condition: str) -> None:
        if service.name == BUNDLED_DATABASE:
            # Healthy as soon as it answers; the file's own probe is pg_isready.
            assert service.spec["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
            assert self.cluster.run("postgres", "SELECT 1")
            return
        assert service.child is not None, f"{service.name} was never started"
        if condition == "service_completed_successfully":
            try:
                service.exit_code = service.child.process.wait(ONE_SHOT_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{service.name} did not complete: {service.log()}") from None
            assert service.exit_code == 0, (
                f"{service.name} exited {service.exit_code}:\n{service.log()}"
            )
        elif condition == "service_healthy":
            self.wait_healthy(service)
        else:
            assert condition == "service_started", condition

    def healthcheck(self, service: Service) -> subprocess.CompletedProcess[str]:
        """The service's healthcheck as written, run with its environment (docker exec)."""
        test = service.spec["healthcheck"]["test"]
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        kind, *rest = test
        argv = ["/bin/sh", "-c", *rest] if kind == "CMD-SHELL" else rest
        argv = [self._rewrite(service, a) for a in argv]
        argv = [str(CERTCTL) if a == "certctl" else a for a in argv]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, env=service.env
        )

    def wait_healthy(self, service: Service) -> subprocess.CompletedProcess[str]:
        for _ in range(PROBES):
            service.probes += 1
            result = self.healthcheck(service)
            if result.returncode == 0:
                return result
            # 2: the probe's own options are wrong; no retry can make it pass.
            assert result.returncode != 2, (
                f"{service.name}'s healthcheck is refused: {result.stderr}"
            )
            assert service.child is not None
            assert service.child.running, (
                f"{service.name} exited while starting: {result.stderr}\n{service.log()}"
            )
            time.sleep(PROBE_PAUSE)
        raise AssertionError(f"{service.name} never became healthy:\n{service.log()}")

    def down(self) -> dict[str, int]:
        """Stop in reverse start order (SIGTERM, as ``docker compose down`` does)."""
        codes = {}
        for service in reversed(self.started):
            if service.child is not None and service.exit_code is None:
                service.exit_code = service.child.stop()
            codes[service.name] = service.exit_code if service.exit_code is not None else -1
        return codes

    def cleanup(self) -> None:
        self.down()
        for database in self.databases:
            self.cluster.drop_database(database)
        for role in self.roles:
            self.cluster.run("postgres", f'DROP ROLE IF EXISTS "{role}"')


# --------------------------------------------------------------------------- fixtures


def filled_env(path: Path) -> dict[str, str]:
    """deploy/.env.example filled in as an operator would, written and read back."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=$", line.strip())
        if match:
            key = match.group(1)
            values[key] = (
                f"admin:{secrets.token_hex(24)}:admin"
                if key.endswith("API_KEYS")
                else secrets.token_hex(24)
            )
    write_env(path, values)
    return read_env_file(path)


@dataclass
class Running:
    stack: Stack
    variables: dict[str, str]
    api: httpx.Client
    ids: dict[str, str] = field(default_factory=dict)

    def get(self, path: str) -> Any:
        response = self.api.get(path)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def running(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("compose")
    variables = filled_env(root / ".env")
    stack = Stack(root, variables, pg_cluster)
    try:
        stack.up()
        server = stack.services["certctl-server"]
        port = stack.ports["certctl-server"][8443]
        key = variables["CERTCTL_API_KEYS"].split(":")[1]
        with httpx.Client(
            base_url=f"https://127.0.0.1:{port}",
            verify=trusting(server.host_path("/etc/certctl/tls/ca.pem")),
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as api:
            yield Running(stack, variables, api)
    finally:
        stack.cleanup()


# --------------------------------------------------------------------------- the tests


def test_interpolation_refuses_a_missing_secret(tmp_path: Path) -> None:
    variables = filled_env(tmp_path / ".env")
    document = yaml.safe_load(COMPOSE.read_text())
    for name in variables:
        with pytest.raises(MissingVariable, match=name):
            interpolated(document, {**variables, name: ""})


def test_the_services_start_in_depends_on_order(running: Running) -> None:
    order = running.stack.order
    assert order.index("certctl-tls-init") < order.index("certctl-server")
    assert order.index("postgres") < order.index("certctl-server")
    assert order.index("certctl-server") < order.index("certctl-agent")
    started = [s.name for s in running.stack.started]
    assert started == ["certctl-tls-init", "certctl-server", "certctl-agent"]


def test_tls_init_completed_and_published_only_the_ca(running: Running) -> None:
    init = running.stack.services["certctl-tls-init"]
    assert init.exit_code == 0
    tls = init.host_path("/etc/certctl/tls")
    bundle = init.host_path("/etc/certctl/ca")
    assert {p.name for p in tls.iterdir()} >= {"ca.pem", "server.pem", "server-key.pem"}
    assert sorted(p.name for p in bundle.iterdir()) == ["ca.pem"]
    assert (bundle / "ca.pem").read_bytes() == (tls / "ca.pem").read_bytes()
    assert (tls / "server-key.pem").stat().st_mode & 0o077 == 0


def test_tls_init_runs_again_and_keeps_the_certificate(running: Running) -> None:
    init = running.stack.services["certctl-tls-init"]
    server_pem = init.host_path("/etc/certctl/tls/server.pem")
    before = server_pem.read_bytes()
    again = subprocess.run(
        init.argv,
        capture_output=True,
        text=True,
        timeout=ONE_SHOT_TIMEOUT,
        env=init.env,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert server_pem.read_bytes() == before, "a second `up` must keep what agents trust"


def test_the_server_healthcheck_as_written_passes(running: Running) -> None:
    server = running.stack.services["certctl-server"]
    assert "--cacert" in server.spec["healthcheck"]["test"]
    result = running.stack.healthcheck(server)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("healthy: https://localhost:")


def test_the_agent_healthcheck_passes_and_the_agent_registered(running: Running) -> None:
    agent = running.stack.services["certctl-agent"]
    result = running.stack.healthcheck(agent)
    assert result.returncode == 0, result.stderr
    name = agent.env["CERTCTL_AGENT_NAME"]
    found = wait_for(
        lambda: [a for a in running.get("/api/v1/agents")["items"] if a["name"] == name],
        60,
        "the agent to register",
    )
    assert len(found) == 1
    running.ids["agent"] = found[0]["id"]


def test_a_certificate_deploys_to_the_agent(running: Running) -> None:
    agent = running.stack.services["certctl-agent"]
    deployed = agent.host_path(DEPLOY_ROOT)
    owner = running.api.post(
        "/api/v1/owners", json={"id": "compose", "name": "Compose", "email": "ops@example.test"}
    )
    assert owner.status_code == 201, owner.text
    target = running.api.post(
        "/api/v1/targets",
        json={
            "name": "compose-files",
            "type": "File",
            "agent_id": running.ids["agent"],
            "config": {"cert_path": f"{deployed}/web.pem", "key_path": f"{deployed}/web-key.pem"},
        },
    )
    assert target.status_code == 201, target.text
    created = running.api.post(
        "/api/v1/certificates",
        json={
            "name": "compose-web",
            "common_name": "web.compose.test",
            "owner_id": "compose",
            "target_ids": [target.json()["id"]],
        },
    )
    assert created.status_code == 201, created.text
    cert_id = created.json()["certificate"]["id"]

    def deployment() -> dict[str, Any] | None:
        jobs = running.get(f"/api/v1/jobs?certificate_id={cert_id}&type=Deployment")["items"]
        done = [j for j in jobs if j["status"] in ("Completed", "Failed")]
        return done[0] if done else None

    job = wait_for(deployment, 180, "the deployment to finish")
    assert job["status"] == "Completed", (job, agent.log())
    version = running.get(f"/api/v1/certificates/{cert_id}/versions")["items"][0]
    leaf = load_certificates((deployed / "web.pem").read_bytes())[0]
    assert fingerprint_sha256(leaf) == version["fingerprint_sha256"]
    key = load_private_key((deployed / "web-key.pem").read_bytes())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == (
        leaf.public_key().public_bytes(serialization.Encoding.DER, spki)
    )
    assert (deployed / "web-key.pem").stat().st_mode & 0o777 == 0o600


def test_the_stack_stops_cleanly(running: Running) -> None:
    codes = running.stack.down()
    assert codes == {"certctl-agent": 0, "certctl-server": 0, "certctl-tls-init": 0}
    with contextlib.suppress(httpx.TransportError):
        running.api.get("/health")
        pytest.fail("the server still answers after down")
