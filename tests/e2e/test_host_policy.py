"""The host decides: a real ``certctl agent`` running as root, against a real control plane,
refuses every deployment its host policy does not allow before writing or running
anything, and reports a failing ``nginx -t`` with its whole multi-line output.

Some targets go through the API (the server accepts them: they are ordinary configs that
this host's policy happens to forbid); others are written straight into the database, as
a compromised control plane would, because the API refuses them itself. Either way the
agent is the boundary. Judged from outside only: the API, the files, a canary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest_store import Cluster
from waiting import wait_for

from certctl.agent.policy import BUILT_IN, HostPolicy, Rules, write_policy
from certctl.core.model import TargetType
from certctl.core.text import FREE_TEXT_LIMIT
from certctl.testing.material import ScratchCA
from certctl.testing.policy import rules_allowing
from certctl.testing.server import ServerProcess, control_plane, start_certctl, write_env
from certctl.testing.sidecars.launchers import launch
from certctl.testing.sidecars.servers import Sidecar, SidecarUnavailable

pytestmark = pytest.mark.sidecar

POLL = "1s"
CHATTY = f"""#!{sys.executable}
import sys
for n in range(3000):
    print(f"check {{n}}: the certificate is fine, the configuration is not")
sys.exit(1)
"""


@dataclass
class Host:
    server: ServerProcess
    api: httpx.Client
    cluster: Cluster
    database: str
    nginx: Sidecar
    root: Path
    agent_env: Path
    agent_log: Path
    policy_file: Path
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def allowed(self) -> Path:
        return self.root / "allowed"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    @property
    def canary(self) -> Path:
        return self.root / "canary"

    @property
    def broken_conf(self) -> Path:
        return self.root / "nginx-broken.conf"

    @property
    def chatty(self) -> Path:
        return self.root / "chatty-check"

    def get(self, path: str) -> Any:
        response = self.api.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: Any, expect: int = 201) -> Any:
        response = self.api.post(path, json=body)
        assert response.status_code == expect, response.text
        return response.json()

    def target(self, name: str, config: dict[str, Any], kind: str = "File") -> str:
        body = {"name": name, "type": kind, "agent_id": self.ids["agent"], "config": config}
        target_id: str = self.post("/api/v1/targets", body)["id"]
        return target_id

    def certificate(self, name: str, target_id: str) -> str:
        created = self.post(
            "/api/v1/certificates",
            {
                "name": name,
                "common_name": f"{name}.example.test",
                "owner_id": "owner-policy",
                "renewal_policy_id": "rp-once",
                "target_ids": [target_id],
            },
        )
        cert_id: str = created["certificate"]["id"]
        return cert_id

    def deployments(self, cert_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(
            f"/api/v1/jobs?certificate_id={cert_id}&type=Deployment&limit=100"
        )["items"]
        return sorted(items, key=lambda j: j["created_at"])

    def finished_deployment(self, cert_id: str, after: set[str] | None = None) -> dict[str, Any]:
        """The certificate's newest deployment once it has ended (not one in ``after``)."""

        def done() -> dict[str, Any] | None:
            fresh = [j for j in self.deployments(cert_id) if j["id"] not in (after or set())]
            if fresh and fresh[-1]["status"] in ("Completed", "Failed"):
                return fresh[-1]
            return None

        found: dict[str, Any] = wait_for(done, 90, f"a deployment of {cert_id} to end")
        return found

    def inject(self, target_id: str, changes: dict[str, Any]) -> None:
        """Change a target's config in the database behind the API's back."""
        self.cluster.run(
            self.database,
            f"UPDATE deployment_targets SET config = config || '{json.dumps(changes)}'::jsonb "
            f"WHERE id = '{target_id}'",
        )

    def agent_log_text(self) -> str:
        return self.agent_log.read_text(errors="replace") if self.agent_log.exists() else ""


def host_policy(root: Path, nginx: Sidecar, chatty: Path, broken: Path) -> HostPolicy:
    """Files below ``root/allowed``; NGINX's own files and commands, and two checks."""
    nothing = Rules(write_roots=(), commands=())
    rules = dict.fromkeys(BUILT_IN, nothing)
    rules[TargetType.FILE] = rules_allowing([root / "allowed"])
    broken_check = ("nginx", "-t", "-p", str(root), "-c", str(broken))
    rules[TargetType.NGINX] = rules_allowing(
        [nginx.cert_dir],
        [nginx.reload_argv, nginx.validate_argv, broken_check, (str(chatty),)],
    )
    return HostPolicy(rules, None)


@pytest.fixture(scope="module")
def host(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.skip("the host-policy tests run the agent as root; run them as root")
    root = tmp_path_factory.mktemp("host-policy")
    root.chmod(0o755)
    for directory in ("allowed", "outside"):
        (root / directory).mkdir()
    initial = ScratchCA("policy initial").issue("localhost")
    try:
        nginx_context = launch("nginx", initial.cert_pem, initial.chain_pem, initial.key_pem)
        nginx = nginx_context.__enter__()
    except SidecarUnavailable as exc:
        pytest.skip(str(exc))
    database = pg_cluster.create_database()
    chatty, broken = root / "chatty-check", root / "nginx-broken.conf"
    chatty.write_text(CHATTY)
    chatty.chmod(0o755)
    broken.write_text("events {}\nhttp {\n  ssl_certificate_nonsense on;\n}\n")
    policy_file = write_policy(
        root / "etc" / "agent-policy.toml", host_policy(root, nginx, chatty, broken)
    )
    extra = {
        "CERTCTL_SCHEDULER_JOB_PROCESSOR_INTERVAL": "1s",
        "CERTCTL_SCHEDULER_RETRY_INTERVAL": "1s",
    }
    try:
        with control_plane(
            root / "server", database_url=pg_cluster.dsn(database), extra_env=extra
        ) as server:
            agent_env = write_env(
                root / "agent.env",
                {
                    "CERTCTL_SERVER_URL": server.url,
                    "CERTCTL_SERVER_CA_BUNDLE_PATH": str(server.ca_path),
                    "CERTCTL_AGENT_BOOTSTRAP_TOKEN": server.bootstrap_token,
                    "CERTCTL_AGENT_NAME": "policy-host",
                    "CERTCTL_AGENT_STATE_DIR": str(root / "agent-state"),
                    "CERTCTL_AGENT_POLL_INTERVAL": POLL,
                    "CERTCTL_AGENT_HEARTBEAT_INTERVAL": "2s",
                    "CERTCTL_AGENT_POLICY_FILE": str(policy_file),
                    "CERTCTL_LOG_LEVEL": "info",
                },
            )
            log = root / "agent.log"
            agent = start_certctl("agent", agent_env, log)
            try:
                with server.client() as api:
                    world = Host(
                        server, api, pg_cluster, database, nginx, root, agent_env, log, policy_file
                    )
                    agents = wait_for(
                        lambda: world.get("/api/v1/agents")["items"], 30, "the agent to register"
                    )
                    world.ids["agent"] = agents[0]["id"]
                    world.post(
                        "/api/v1/owners",
                        {"id": "owner-policy", "name": "Policy", "email": "p@example.test"},
                    )
                    world.post(
                        "/api/v1/renewal-policies",
                        {"id": "rp-once", "name": "once", "max_retries": 0},
                    )
                    yield world
            finally:
                agent.stop(30)
    finally:
        nginx_context.__exit__(None, None, None)
        pg_cluster.drop_database(database)


def assert_refused(job: dict[str, Any], *needles: str) -> None:
    assert job["status"] == "Failed", job
    for needle in needles:
        assert needle in job["last_error"], job["last_error"]


def test_a_target_inside_the_policy_deploys_as_before(host: Host) -> None:
    live = host.allowed / "good"
    live.mkdir()
    target = host.target("good", {"cert_path": f"{live}/cert.pem", "key_path": f"{live}/key.pem"})
    cert_id = host.certificate("good", target)
    job = host.finished_deployment(cert_id)
    assert job["status"] == "Completed", (job, host.agent_log_text()[-2000:])
    assert (live / "cert.pem").exists()
    host.ids["good_target"], host.ids["good_cert"] = target, cert_id


def test_a_command_outside_the_policy_never_runs(host: Host) -> None:
    live = host.allowed / "touchy"
    live.mkdir()
    config = {
        "cert_path": f"{live}/cert.pem",
        "key_path": f"{live}/key.pem",
        "reload_command": ["touch", str(host.canary)],  # the server accepts this one
    }
    cert_id = host.certificate("touchy", host.target("touchy", config))
    job = host.finished_deployment(cert_id)
    assert_refused(job, "host policy refuses the reload command", "connectors.file.commands")
    assert not host.canary.exists()
    assert list(live.iterdir()) == [], "refused before anything was written"


def test_a_shell_command_from_a_compromised_control_plane_never_runs(host: Host) -> None:
    live = host.allowed / "shell"
    live.mkdir()
    shell = ["sh", "-c", f"touch {host.canary}"]
    config = {"cert_path": f"{live}/cert.pem", "key_path": f"{live}/key.pem"}
    refused = host.api.post(
        "/api/v1/targets",
        json={
            "name": "shell-api",
            "type": "File",
            "agent_id": host.ids["agent"],
            "config": config | {"reload_command": shell},
        },
    )
    assert refused.status_code == 400, refused.text
    target = host.target("shell", config)
    host.inject(target, {"reload_command": shell})
    cert_id = host.certificate("shell", target)
    job = host.finished_deployment(cert_id)
    assert_refused(job, "shell, interpreter or command wrapper")
    assert not host.canary.exists()
    assert list(live.iterdir()) == []


def test_a_path_outside_the_write_roots_is_never_written(host: Host) -> None:
    config = {
        "cert_path": f"{host.outside}/cert.pem",
        "key_path": f"{host.outside}/key.pem",
    }
    cert_id = host.certificate("outside", host.target("outside", config))
    job = host.finished_deployment(cert_id)
    assert_refused(job, "outside connectors.file.write_roots", str(host.policy_file))
    assert list(host.outside.iterdir()) == []


def test_special_and_excessive_modes_are_refused(host: Host) -> None:
    live = host.allowed / "modes"
    live.mkdir()
    config = {"cert_path": f"{live}/cert.pem", "key_path": f"{live}/key.pem"}
    refused = host.api.post(
        "/api/v1/targets",
        json={
            "name": "setuid-api",
            "type": "File",
            "agent_id": host.ids["agent"],
            "config": config | {"cert_file_mode": "4755"},
        },
    )
    assert refused.status_code == 400, refused.text
    setuid = host.target("setuid", config)
    host.inject(setuid, {"cert_file_mode": "4755"})
    job = host.finished_deployment(host.certificate("setuid", setuid))
    assert_refused(job, "setuid, setgid or sticky")
    loose = host.target("loose", config | {"key_file_mode": "0666"})
    job = host.finished_deployment(host.certificate("loose", loose))
    assert_refused(job, "connectors.file.max_key_mode")
    assert list(live.iterdir()) == []


def test_a_target_changed_to_a_forbidden_command_then_renewed_is_refused(host: Host) -> None:
    live = host.allowed / "good"
    before = {p.name: p.read_bytes() for p in live.iterdir()}
    config = {
        "cert_path": f"{live}/cert.pem",
        "key_path": f"{live}/key.pem",
        "reload_command": ["touch", str(host.canary)],
    }
    updated = host.api.put(f"/api/v1/targets/{host.ids['good_target']}", json={"config": config})
    assert updated.status_code == 200, updated.text
    cert_id = host.ids["good_cert"]
    earlier = {j["id"] for j in host.deployments(cert_id)}
    renewed = host.post(f"/api/v1/certificates/{cert_id}/renew", {"force": True}, expect=202)
    wait_for(
        lambda: host.get(f"/api/v1/jobs/{renewed['job_id']}")["status"] == "Completed",
        60,
        "the renewal",
    )
    job = host.finished_deployment(cert_id, after=earlier)
    assert_refused(job, "host policy refuses the reload command")
    assert not host.canary.exists()
    assert {p.name: p.read_bytes() for p in live.iterdir()} == before


def test_a_failing_nginx_check_reports_its_whole_output(host: Host) -> None:
    nginx = host.nginx
    broken = ["nginx", "-t", "-p", str(host.root), "-c", str(host.broken_conf)]
    target = host.target("nginx-broken", nginx.target_config(validate_command=broken), "NGINX")
    job = host.finished_deployment(host.certificate("nginx-broken", target))
    assert_refused(job, "nginx -t")
    error = job["last_error"]
    lines = [line for line in error.splitlines() if line.strip()]
    assert any("[emerg]" in line and "ssl_certificate_nonsense" in line for line in lines), error
    assert any("test failed" in line for line in lines), error
    assert len(lines) >= 2, "the output arrives with its line breaks"
    assert job["attempts"] == 1, "failed at the agent's first report, not by a timeout"
    assert "refused the report" not in host.agent_log_text()


def test_a_chatty_check_is_reported_cut_to_the_bound(host: Host) -> None:
    config = host.nginx.target_config(validate_command=[str(host.chatty)])
    target = host.target("nginx-chatty", config, "NGINX")
    job = host.finished_deployment(host.certificate("nginx-chatty", target))
    assert job["status"] == "Failed"
    error = job["last_error"]
    assert len(error) <= FREE_TEXT_LIMIT
    assert "check 0:" in error
    assert "check 2999:" in error
    assert "characters cut by certctl" in error


def test_an_agent_whose_policy_others_can_write_refuses_to_start(host: Host) -> None:
    host.policy_file.chmod(0o664)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "certctl", "agent", "--once", "--env-file", str(host.agent_env)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        host.policy_file.chmod(0o644)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CERTCTL_AGENT_POLICY_FILE" in lines[0]
    assert "chmod go-w" in lines[0]
