"""Two ``certctl server`` processes on one PostgreSQL, spoken to over HTTPS: a job created
through replica A wakes the agent's long poll held by replica B (``LISTEN/NOTIFY``), a
poll without work ends after its wait having claimed nothing, SIGTERM of a replica ends
its waiting polls at once, and an old-style agent (``wait=0`` plus heartbeats) still works.

Latency is printed, and bounded only loosely (a third of the wait): it tells "woken" from
"timed out". The benchmark (``nox -s bench -- fleet-api``) holds the latency targets.
"""

from __future__ import annotations

import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest_store import Cluster

from certctl.testing.server import ServerProcess, control_plane

pytestmark = pytest.mark.process

WAIT = 30
HANG = 120.0
"""A bound on a hang only: never a pass/fail time."""


@dataclass
class Replicas:
    a: ServerProcess
    b: ServerProcess
    operator: str
    bootstrap: str


@pytest.fixture
def replicas(pg_cluster: Cluster, tmp_path: Path) -> Iterator[Replicas]:
    database = pg_cluster.create_database()
    operator = f"operator-{secrets.token_hex(16)}"
    bootstrap = f"bootstrap-{secrets.token_hex(16)}"
    shared = {
        "CERTCTL_API_KEYS": f"operator:{operator}:admin",
        "CERTCTL_AGENT_BOOTSTRAP_TOKEN": bootstrap,
        "CERTCTL_CONFIG_ENCRYPTION_KEY": f"replicas-{secrets.token_hex(24)}",
        "CERTCTL_DATA_DIR": str(tmp_path / "data"),
        "CERTCTL_RATE_LIMIT_ENABLED": "false",
    }
    url = pg_cluster.dsn(database)
    try:
        with ExitStack() as stack:
            a = stack.enter_context(
                control_plane(tmp_path / "a", database_url=url, extra_env=shared, name="a")
            )
            b = stack.enter_context(
                control_plane(
                    tmp_path / "b", database_url=url, extra_env=shared, name="b",
                    tls_dir=tmp_path / "a" / "tls",
                )
            )  # fmt: skip
            yield Replicas(a, b, operator, bootstrap)
    finally:
        pg_cluster.drop_database(database)


def client(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        verify=server.ssl_context(),
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(30, read=WAIT + 30),
    )


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text[:300])
    return response.json()


@dataclass
class Agent:
    id: str
    key: str
    target_id: str


def agent_with_target(replicas: Replicas, name: str) -> Agent:
    with client(replicas.a, replicas.bootstrap) as boot:
        body = ok(
            boot.post(
                "/api/v1/agents/register", json={"name": name, "hostname": f"{name}.example"}
            ),
            201,
        )
    with client(replicas.a, replicas.operator) as ops:
        target = ok(
            ops.post(
                "/api/v1/targets",
                json={
                    "name": f"{name}-files",
                    "type": "File",
                    "agent_id": body["agent_id"],
                    "config": {
                        "cert_path": f"/srv/{name}/cert.pem",
                        "key_path": f"/srv/{name}/key.pem",
                    },
                },
            ),
            201,
        )
    return Agent(body["agent_id"], body["agent_key"], target["id"])


def create_certificate(replicas: Replicas, agent: Agent) -> str:
    with client(replicas.a, replicas.operator) as ops:
        owner = ok(
            ops.post("/api/v1/owners", json={"name": "Alice", "email": "alice@example.com"}),
            201,
        )
        name = f"www-{secrets.token_hex(4)}.example.com"
        body = ok(
            ops.post(
                "/api/v1/certificates",
                json={
                    "name": name,
                    "common_name": name,
                    "sans": [name],
                    "owner_id": owner["id"],
                    "target_ids": [agent.target_id],
                },
            ),
            201,
        )
    cert_id: str = body["certificate"]["id"]
    return cert_id


class Poll(threading.Thread):
    """One long poll of ``agent`` on ``server``, in a thread; ``answer`` once returned."""

    def __init__(self, server: ServerProcess, agent: Agent, wait: int = WAIT) -> None:
        super().__init__(daemon=True)
        self.server, self.agent, self.wait = server, agent, wait
        self.answer: Any = None
        self.error: BaseException | None = None
        self.returned = threading.Event()
        self.returned_at = 0.0

    def run(self) -> None:
        try:
            with client(self.server, self.agent.key) as http:
                response = http.get(
                    f"/api/v1/agents/{self.agent.id}/work", params={"wait": self.wait}
                )
                self.answer = ok(response)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.returned_at = time.monotonic()
            self.returned.set()

    def result(self) -> Any:
        assert self.returned.wait(HANG), "the poll never returned"
        if self.error is not None:
            raise self.error
        return self.answer


def waiting_polls(server: ServerProcess, operator: str) -> int:
    with client(server, operator) as ops:
        text = ops.get("/metrics").text
    found = re.search(r"^certctl_agent_waiting_polls (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def held(server: ServerProcess, operator: str, agent: Agent, wait: int = WAIT) -> Poll:
    before = waiting_polls(server, operator)
    poll = Poll(server, agent, wait)
    poll.start()
    until(lambda: waiting_polls(server, operator) > before)
    assert not poll.returned.is_set()
    return poll


def test_a_job_created_on_one_replica_reaches_a_poll_held_by_the_other(
    replicas: Replicas,
) -> None:
    agent = agent_with_target(replicas, "web-01")
    # First poll on B: nothing to do, so B knows this agent idle and just waits.
    idle = Poll(replicas.b, agent, wait=2)
    idle.start()
    assert idle.result() == {"count": 0, "jobs": [], "wait_seconds": 2}

    poll = held(replicas.b, replicas.operator, agent)
    cert_id = create_certificate(replicas, agent)  # through A
    created_at = time.monotonic()
    answer = poll.result()
    latency = poll.returned_at - created_at
    print(f"job created on A reached the poll held by B after {latency * 1000:.0f} ms")
    assert [j["certificate_id"] for j in answer["jobs"]] == [cert_id]
    assert answer["wait_seconds"] == WAIT
    assert latency < WAIT / 3


def test_a_poll_without_work_claims_nothing(replicas: Replicas) -> None:
    agent = agent_with_target(replicas, "web-02")
    poll = Poll(replicas.b, agent, wait=3)
    poll.start()
    assert poll.result() == {"count": 0, "jobs": [], "wait_seconds": 3}
    with client(replicas.a, replicas.operator) as ops:
        jobs = ok(ops.get("/api/v1/jobs", params={"status": "Running"}))
    assert jobs["items"] == []


def test_sigterm_answers_the_waiting_polls_and_the_agent_polls_the_other_replica(
    replicas: Replicas,
) -> None:
    agent = agent_with_target(replicas, "web-03")
    poll = held(replicas.b, replicas.operator, agent)
    signalled_at = time.monotonic()
    replicas.b.process.send_signal(signal.SIGTERM)
    answer = poll.result()
    print(f"the held poll answered {(poll.returned_at - signalled_at) * 1000:.0f} ms after SIGTERM")
    assert answer == {"count": 0, "jobs": [], "wait_seconds": WAIT}
    assert poll.returned_at - signalled_at < WAIT / 3
    assert replicas.b.process.wait(HANG) == 0
    # The agent's next poll goes to the replica still up, and finds its work there.
    cert_id = create_certificate(replicas, agent)
    again = Poll(replicas.a, agent)
    again.start()
    assert [j["certificate_id"] for j in again.result()["jobs"]] == [cert_id]


def test_an_old_style_agent_short_polls_and_heartbeats(replicas: Replicas) -> None:
    agent = agent_with_target(replicas, "web-04")
    with client(replicas.a, agent.key) as http:
        beat = ok(http.post(f"/api/v1/agents/{agent.id}/heartbeat", json={"version": "0.9.0"}))
        assert beat["status"] == "Online"
        started = time.monotonic()
        empty = ok(http.get(f"/api/v1/agents/{agent.id}/work"))
        assert empty == {"count": 0, "jobs": [], "wait_seconds": 0}
        assert time.monotonic() - started < WAIT / 3  # not held
        cert_id = create_certificate(replicas, agent)
        work = ok(http.get(f"/api/v1/agents/{agent.id}/work"))
        assert [j["certificate_id"] for j in work["jobs"]] == [cert_id]
    with client(replicas.b, replicas.operator) as ops:
        stored = ok(ops.get(f"/api/v1/agents/{agent.id}"))
    assert (stored["status"], stored["version"]) == ("Online", "0.9.0")
