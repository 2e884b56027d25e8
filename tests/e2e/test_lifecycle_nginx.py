"""The whole lifecycle over real HTTPS to a real NGINX: `certctl server` and `certctl agent`
as child processes, operated only through the REST API, judged only from outside.

One module-scoped world (PostgreSQL database, control plane, NGINX, agent) walks through
issue → deploy → renew → failed reload with rollback and bounded retries → crash in the
middle of a deploy → the security checks over everything that happened. The tests run in
file order and build on each other, like an operator's day.
"""

from __future__ import annotations

import base64
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest_store import Cluster
from cryptography.hazmat.primitives import serialization
from waiting import wait_for

from certctl.agent.policy import write_policy
from certctl.pki.chain import verify_chain
from certctl.pki.pem import fingerprint_sha256, load_certificates, load_private_key
from certctl.testing.material import ScratchCA
from certctl.testing.policy import allowing
from certctl.testing.server import ServerProcess, control_plane, start_certctl, write_env
from certctl.testing.sidecars.launchers import launch
from certctl.testing.sidecars.servers import Sidecar, SidecarUnavailable

pytestmark = pytest.mark.sidecar

COMMON_NAME = "localhost"
RETRY_SECONDS = 60  # the smallest retry interval a renewal policy allows


@dataclass
class World:
    server: ServerProcess
    nginx: Sidecar
    agent_env: Path
    state_dir: Path
    api: httpx.Client
    agent_log: Path
    responses: list[bytes] = field(default_factory=list)
    agent: subprocess.Popen[bytes] | None = None
    ids: dict[str, str] = field(default_factory=dict)

    def start_agent(self) -> None:
        self.agent = start_certctl("agent", self.agent_env, self.agent_log).process

    def stop_agent(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.agent is not None
        self.agent.send_signal(sig)
        code = self.agent.wait(30)
        self.agent = None
        return code

    def get(self, path: str) -> Any:
        response = self.api.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.get(f"/api/v1/jobs/{job_id}")
        return found

    def deployments(self) -> list[dict[str, Any]]:
        cert = self.ids["certificate"]
        items: list[dict[str, Any]] = self.get(
            f"/api/v1/jobs?certificate_id={cert}&type=Deployment&limit=1000"
        )["items"]
        return sorted(items, key=lambda j: j["created_at"])

    def served(self) -> str:
        return fingerprint_sha256(self.nginx.served())

    def latest_version(self) -> dict[str, Any]:
        versions: list[dict[str, Any]] = self.get(
            f"/api/v1/certificates/{self.ids['certificate']}/versions"
        )["items"]
        return versions[0]


@pytest.fixture(scope="module")
def world(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("e2e")
    database = pg_cluster.create_database()
    initial = ScratchCA("e2e initial").issue(COMMON_NAME)
    extra = {
        "CERTCTL_SCHEDULER_RETRY_INTERVAL": "1s",
        "CERTCTL_SCHEDULER_JOB_PROCESSOR_INTERVAL": "1s",
        "CERTCTL_LOG_LEVEL": "info",
    }
    try:
        nginx_context = launch("nginx", initial.cert_pem, initial.chain_pem, initial.key_pem)
        nginx = nginx_context.__enter__()
    except SidecarUnavailable as exc:
        pytest.skip(str(exc))
    slow_reload = workdir / "slow-reload"
    marker = workdir / "reload-started"
    slow_reload.write_text(
        "#!/bin/sh\n"
        f"touch {shlex.quote(str(marker))}\nsleep 5\nexec {shlex.join(nginx.reload_argv)}\n"
    )
    slow_reload.chmod(0o755)
    # What this host lets the agent do: NGINX's files, its own commands, and the two
    # hooks the tests below switch to (a failing reload, a slow one).
    policy = allowing(
        [nginx.cert_dir],
        [nginx.reload_argv, nginx.validate_argv, ["/bin/false"], [str(slow_reload)]],
    )
    policy_file = write_policy(workdir / "policy" / "agent-policy.toml", policy)
    try:
        with control_plane(
            workdir / "server", database_url=pg_cluster.dsn(database), extra_env=extra
        ) as server:
            state_dir = workdir / "agent-state"
            agent_env = write_env(
                workdir / "agent.env",
                {
                    "CERTCTL_SERVER_URL": server.url,
                    "CERTCTL_SERVER_CA_BUNDLE_PATH": str(server.ca_path),
                    "CERTCTL_AGENT_BOOTSTRAP_TOKEN": server.bootstrap_token,
                    "CERTCTL_AGENT_NAME": "e2e-web-01",
                    "CERTCTL_AGENT_STATE_DIR": str(state_dir),
                    "CERTCTL_AGENT_POLL_INTERVAL": "1s",
                    "CERTCTL_AGENT_HEARTBEAT_INTERVAL": "2s",
                    "CERTCTL_AGENT_POLICY_FILE": str(policy_file),
                    "CERTCTL_LOG_LEVEL": "info",
                },
            )
            responses: list[bytes] = []

            def keep(response: httpx.Response) -> None:
                response.read()
                responses.append(response.content)

            with server.client() as api:
                api.event_hooks["response"] = [keep]
                world = World(
                    server, nginx, agent_env, state_dir, api, workdir / "agent.log", responses
                )
                world.ids["database"] = database
                world.start_agent()
                try:
                    yield world
                finally:
                    if world.agent is not None:
                        world.stop_agent()
    finally:
        nginx_context.__exit__(None, None, None)
        pg_cluster.drop_database(database)


def test_issue_and_deploy_to_nginx(world: World) -> None:
    agents = wait_for(lambda: world.get("/api/v1/agents")["items"], 30, "the agent to register")
    world.ids["agent"] = agents[0]["id"]
    assert world.api.post(
        "/api/v1/owners", json={"id": "web-team", "name": "Web", "email": "web@example.test"}
    ).is_success
    policy = world.api.post(
        "/api/v1/renewal-policies",
        json={"id": "rp-e2e", "name": "e2e", "max_retries": 1, "retry_interval_seconds": 60},
    )
    assert policy.status_code == 201, policy.text
    target = world.api.post(
        "/api/v1/targets",
        json={
            "name": "nginx",
            "type": "NGINX",
            "agent_id": world.ids["agent"],
            "config": world.nginx.target_config(),
        },
    )
    assert target.status_code == 201, target.text
    world.ids["target"] = target.json()["id"]
    created = world.api.post(
        "/api/v1/certificates",
        json={
            "name": "e2e-web",
            "common_name": COMMON_NAME,
            "owner_id": "web-team",
            "renewal_policy_id": "rp-e2e",
            "target_ids": [world.ids["target"]],
        },
    )
    assert created.status_code == 201, created.text
    world.ids["certificate"] = created.json()["certificate"]["id"]
    (issuance,) = created.json()["job_ids"]
    assert world.job(issuance)["type"] == "Issuance"

    wait_for(lambda: world.job(issuance)["status"] == "Completed", 30, "issuance")
    deploy = wait_for(world.deployments, 30, "a deployment job")[0]
    done = wait_for(
        lambda: (j := world.job(deploy["id"]))["status"] in ("Completed", "Failed") and j,
        60,
        "the deployment",
    )
    assert done["status"] == "Completed", (done, world.agent_log.read_text()[-3000:])
    version = world.latest_version()
    leaf = world.nginx.served()
    assert fingerprint_sha256(leaf) == version["fingerprint_sha256"]
    assert done["verification_status"] == "Success"
    assert done["verification_fingerprint"] == version["fingerprint_sha256"]

    # The served leaf chains to the local CA, checked independently of the deploy path.
    exported = world.get(f"/api/v1/certificates/{world.ids['certificate']}/export/pem")
    chain = load_certificates(exported["chain_pem"].encode())
    verify_chain(leaf, chain[:-1], roots=chain[-1:], now=datetime.now(UTC), server_name=COMMON_NAME)
    cert = world.get(f"/api/v1/certificates/{world.ids['certificate']}")
    assert cert["status"] == "Active"
    assert cert["last_deployment_at"] is not None


def test_forced_renewal_serves_a_new_fingerprint(world: World) -> None:
    before = world.served()
    renewed = world.api.post(
        f"/api/v1/certificates/{world.ids['certificate']}/renew", json={"force": True}
    )
    assert renewed.status_code == 202, renewed.text
    job_id = renewed.json()["job_id"]
    wait_for(lambda: world.job(job_id)["status"] == "Completed", 30, "the renewal")
    fresh = world.latest_version()["fingerprint_sha256"]
    assert fresh != before
    wait_for(lambda: world.served() == fresh, 60, "NGINX to serve the renewed leaf")


def test_broken_reload_fails_keeps_serving_and_stops_after_max_attempts(world: World) -> None:
    serving = world.served()
    config = {**world.nginx.target_config(), "reload_command": "/bin/false"}
    updated = world.api.put(f"/api/v1/targets/{world.ids['target']}", json={"config": config})
    assert updated.status_code == 200, updated.text
    before = {j["id"] for j in world.deployments()}
    renewed = world.api.post(
        f"/api/v1/certificates/{world.ids['certificate']}/renew", json={"force": True}
    )
    assert renewed.status_code == 202, renewed.text
    job = wait_for(
        lambda: [j for j in world.deployments() if j["id"] not in before], 60, "the deployment"
    )[0]
    failed = wait_for(
        lambda: (j := world.job(job["id"]))["status"] == "Failed" and j, 60, "the failure"
    )
    assert "reload" in failed["last_error"].lower(), failed
    assert failed["attempts"] == 1
    assert failed["next_retry_at"] is not None
    assert world.served() == serving, "NGINX must keep serving the previous leaf"
    # The retry runs after the policy's interval and fails the same way; then it stops.
    final = wait_for(
        lambda: (j := world.job(job["id"]))["attempts"] == 2 and j["status"] == "Failed" and j,
        RETRY_SECONDS + 45,
        "the retry",
    )
    assert final["next_retry_at"] is None
    assert final["max_attempts"] == 2
    assert world.served() == serving
    time.sleep(3)
    assert world.job(job["id"])["attempts"] == 2, "no attempt beyond max_attempts"
    audit = world.get("/api/v1/audit?action=job_failed_permanently&limit=100")["items"]
    assert any(e["resource_id"] == job["id"] for e in audit)


def _served_files_consistent(world: World) -> None:
    """Every certificate file next to the key holds the key's leaf: never a mixed set."""
    files = {p.name: p.read_bytes() for p in world.nginx.cert_paths()}
    keys = [load_private_key(data) for data in files.values() if b"PRIVATE KEY" in data]
    certs = [load_certificates(d)[0] for d in files.values() if b"CERTIFICATE" in d]
    assert keys
    assert certs
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    wanted = keys[0].public_key().public_bytes(der, spki)
    assert all(c.public_key().public_bytes(der, spki) == wanted for c in certs)


def test_sigkill_mid_deploy_then_restart_completes_or_retries(world: World) -> None:
    marker = world.agent_log.parent / "reload-started"
    slow = [str(world.agent_log.parent / "slow-reload")]  # touches the marker, sleeps, reloads
    config = {**world.nginx.target_config(), "reload_command": slow}
    assert world.api.put(
        f"/api/v1/targets/{world.ids['target']}", json={"config": config}
    ).is_success
    before = {j["id"] for j in world.deployments()}
    renewed = world.api.post(
        f"/api/v1/certificates/{world.ids['certificate']}/renew", json={"force": True}
    )
    assert renewed.status_code == 202, renewed.text
    wait_for(marker.exists, 60, "the deploy to reach its reload")
    assert world.stop_agent(signal.SIGKILL) == -signal.SIGKILL
    _served_files_consistent(world)
    world.start_agent()
    job = next(j for j in world.deployments() if j["id"] not in before)
    final = wait_for(
        lambda: (j := world.job(job["id"]))["status"] == "Completed" and j,
        60,
        "the interrupted deployment to complete after the restart",
    )
    assert final["status"] == "Completed"
    _served_files_consistent(world)
    wait_for(
        lambda: world.served() == world.latest_version()["fingerprint_sha256"],
        30,
        "NGINX to serve the new leaf",
    )


def _key_fragments(state_dir: Path) -> list[bytes]:
    """Every private key the agent holds, as PEM, base64 body lines and raw DER."""
    fragments: list[bytes] = []
    for path in state_dir.rglob("*.pem"):
        data = path.read_bytes()
        if b"PRIVATE KEY" not in data:
            continue
        key = load_private_key(data)
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        body = b"".join(line for line in data.splitlines() if not line.startswith(b"-----"))
        fragments += [der, body, base64.b64encode(der)[:40], *data.splitlines()[1:3]]
    return fragments


def test_no_private_key_leaves_the_agent(world: World, pg_cluster: Cluster) -> None:
    fragments = _key_fragments(world.state_dir)
    assert len(fragments) >= 4, "the agent should hold at least one key"
    for path in ("/api/v1/certificates", "/api/v1/jobs?limit=1000", "/api/v1/audit?limit=1000"):
        world.get(path)
    world.get(f"/api/v1/certificates/{world.ids['certificate']}/versions")
    world.get(f"/api/v1/certificates/{world.ids['certificate']}/export/pem")
    database = world.ids["database"]
    tables = [r["tablename"] for r in pg_cluster.run(
        database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )[0]]  # fmt: skip
    dump = b"\n".join(
        str(row[0]).encode()
        for table in tables
        for row in pg_cluster.run(database, f'SELECT row_to_json(t)::text FROM "{table}" t')[0]
    )
    assert b"BEGIN CERTIFICATE REQUEST" in dump, "the dump must hold the stored versions"
    places = {
        "database": dump,
        "server log": world.server.log().encode(),
        "API responses": b"\n".join(world.responses),
    }
    for where, haystack in places.items():
        assert b"PRIVATE KEY" not in haystack, where
        for fragment in fragments:
            assert fragment not in haystack, f"private key bytes found in the {where}"


def test_an_agent_key_cannot_read_another_agents_job(world: World) -> None:
    other = world.api.post(
        "/api/v1/agents/register",
        json={"name": "e2e-intruder", "hostname": "intruder"},
        headers={"Authorization": f"Bearer {world.server.bootstrap_token}"},
    )
    assert other.status_code == 201, other.text
    intruder = other.json()
    job_id = world.deployments()[0]["id"]
    with world.server.client(key=intruder["agent_key"]) as client:
        own_path = client.get(f"/api/v1/agents/{intruder['agent_id']}/jobs/{job_id}")
        their_path = client.get(f"/api/v1/agents/{world.ids['agent']}/jobs/{job_id}")
        report = client.post(
            f"/api/v1/agents/{intruder['agent_id']}/jobs/{job_id}/status",
            json={"status": "Completed"},
        )
    assert own_path.status_code == 403
    assert their_path.status_code == 403
    assert report.status_code == 403


def test_http_server_url_exits_before_any_connection(world: World, tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        env_file = write_env(
            tmp_path / "plain.env",
            {
                "CERTCTL_SERVER_URL": f"http://127.0.0.1:{port}",
                "CERTCTL_AGENT_BOOTSTRAP_TOKEN": world.server.bootstrap_token,
                "CERTCTL_AGENT_STATE_DIR": str(tmp_path / "state"),
            },
        )
        result = subprocess.run(
            [sys.executable, "-m", "certctl", "agent", "--env-file", str(env_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            connection = None
        assert connection is None, "the agent connected to a plaintext URL"
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CERTCTL_SERVER_URL" in lines[0]
    assert "https://" in lines[0]


def test_dry_run_validates_the_targets_and_claims_nothing(world: World) -> None:
    before = world.deployments()
    result = subprocess.run(
        [sys.executable, "-m", "certctl", "agent", "--dry-run", "--env-file", str(world.agent_env)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nginx" in result.stdout
    assert world.deployments() == before


def test_sigterm_stops_the_agent_cleanly(world: World) -> None:
    assert world.stop_agent(signal.SIGTERM) == 0
    world.start_agent()


def test_a_retired_agent_exits_0(world: World) -> None:
    retired = world.api.delete(
        f"/api/v1/agents/{world.ids['agent']}", params={"force": "true", "reason": "e2e over"}
    )
    assert retired.status_code == 200, retired.text
    assert world.agent is not None
    assert world.agent.wait(30) == 0, world.agent_log.read_text()[-2000:]
    world.agent = None
