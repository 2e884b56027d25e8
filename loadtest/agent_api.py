"""Locust scenario: agents on the control-plane API, and the TLS + HTTP floor beside them.

    locust -f loadtest/agent_api.py --headless --host https://127.0.0.1:8443 AgentUser

``benchmarks/api.py`` (``nox -s bench -- api``) starts a server, runs this file in a
separate process and reads the results; it can also be run by hand against any server.

Two user classes, chosen by name on the command line:

- ``AgentUser``: one simulated agent per user. At start, outside the statistics, it
  registers with the bootstrap token, has an operator create a File target on it and a
  certificate mapped to that target, and answers the Issuance job with a CSR of its own
  ECDSA P-256 key, which issues the certificate and queues a Deployment job. Then it cycles
  through five requests, one per task run::

      heartbeat -> work (claims the Deployment job) -> status Completed -> work (empty)
      -> operator deploy (queues the next Deployment job)

  so heartbeat : work : status : deploy = 1 : 2 : 1 : 1. The operator's
  ``POST /api/v1/certificates/{id}/deploy`` is counted in the statistics (as
  ``operator: deploy``) because the server does its work like any other call; leaving it
  out would hide a fifth of the load.
- ``HealthUser``: ``GET /health`` with no credentials and no database access, the same
  TLS, HTTP and middleware path: the floor the agent mix is compared with.

Every connection verifies the server certificate against the CA file; nothing skips
verification. Connections are kept alive (one per user). At a fixed rate each user starts
at a random phase of its pacing interval, so arrivals are spread out rather than coming
in bursts of every user at once.

Environment:

- ``CERTCTL_SERVER_CA_BUNDLE_PATH``: CA file that signed the server certificate (as for
  the agent; ``certctl server init-tls`` prints it).
- ``CERTCTL_AGENT_BOOTSTRAP_TOKEN``: the server's bootstrap token (``AgentUser``).
- ``CERTCTL_LOAD_API_KEY``: an operator key from the server's ``CERTCTL_API_KEYS``
  (``AgentUser``).
- ``CERTCTL_LOAD_RATE``: requests per second per user (paced like ``constant_throughput``,
  from a random phase); unset or 0 means no wait at all, for saturation.
- ``CERTCTL_LOAD_SAMPLES``: if set, each locust process writes every request it timed to
  ``<value>.<pid>.jsonl`` when the test stops (start time, milliseconds, name, ok), so the
  caller can compute percentiles below locust's whole-millisecond rounding.
"""

from __future__ import annotations

import json
import os
import random
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.event import EventHook

from certctl.pki.csr import build_csr
from certctl.pki.keys import generate_key
from certctl.pki.names import SubjectAltNames

CA_FILE = os.environ.get("CERTCTL_SERVER_CA_BUNDLE_PATH", "")
BOOTSTRAP_TOKEN = os.environ.get("CERTCTL_AGENT_BOOTSTRAP_TOKEN", "")
API_KEY = os.environ.get("CERTCTL_LOAD_API_KEY", "")
RATE = float(os.environ.get("CERTCTL_LOAD_RATE", "0") or 0)
SAMPLES = os.environ.get("CERTCTL_LOAD_SAMPLES", "")
OWNER_ID = "owner-loadtest"

_samples: list[tuple[float, float, str, bool]] = []


def tls_context(cafile: str | None = None, **_: Any) -> ssl.SSLContext:
    """Verifying TLS 1.3 client context trusting the server's CA file only.

    geventhttpclient calls this with ``cafile`` set to its default bundle; that is
    ignored on purpose, so only the server's own CA is trusted.
    """
    if not CA_FILE:
        raise RuntimeError("set CERTCTL_SERVER_CA_BUNDLE_PATH to the server's CA file")
    import gevent.ssl  # noqa: PLC0415 (locust has monkey-patched by now)

    context: ssl.SSLContext = gevent.ssl.create_default_context(cafile=CA_FILE)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


@events.request.add_listener
def _record(
    name: str, response_time: float, exception: BaseException | None, start_time: float, **_: Any
) -> None:
    if SAMPLES:
        _samples.append((start_time, response_time, name, exception is None))


@events.test_stop.add_listener
def _write_samples(**_: Any) -> None:
    if SAMPLES and _samples:
        with open(f"{SAMPLES}.{os.getpid()}.jsonl", "w", encoding="utf-8") as out:
            for sample in _samples:
                out.write(json.dumps(sample) + "\n")
        _samples.clear()


class _User(FastHttpUser):
    abstract = True
    insecure = False
    ssl_context_factory = staticmethod(tls_context)
    # One connection per simulated user, kept alive for the whole run.
    concurrency = 1
    _next_at = 0.0

    def on_start(self) -> None:
        self.stagger()

    def stagger(self) -> None:
        """At a fixed rate, start each user at a random point of its pacing interval.

        locust starts all users within a few milliseconds, and pacing from that start
        would make every user fire at the same instant: 100 req/s would arrive as bursts
        of 20 simultaneous requests five times a second, which measures queueing inside
        the burst rather than the server.
        """
        if RATE > 0:
            gevent.sleep(random.random() / RATE)  # noqa: S311 (a phase, not a secret)
        self._next_at = time.perf_counter()

    def wait_time(self) -> float:
        """``RATE`` requests per second from the user's own phase, or no wait at all.

        Like locust's ``constant_throughput`` but paced from the end of ``stagger``; a
        request slower than the interval starts the next one at once, without catch-up
        bursts.
        """
        if RATE <= 0:
            return 0.0
        now = time.perf_counter()
        self._next_at = max(self._next_at + 1 / RATE, now)
        return self._next_at - now


class HealthUser(_User):
    """The floor: TLS, HTTP parsing and the app's middleware, no auth and no database."""

    @task
    def health(self) -> None:
        self.client.get("/health", name="health")


class SetupError(RuntimeError):
    """A setup call failed; the user stops (locust reports the exception)."""


class AgentUser(_User):
    """One agent: heartbeat, work polls and deployment status reports (see module doc)."""

    def on_start(self) -> None:
        if not BOOTSTRAP_TOKEN or not API_KEY:
            raise SetupError("set CERTCTL_AGENT_BOOTSTRAP_TOKEN and CERTCTL_LOAD_API_KEY")
        # Setup traffic goes through its own session whose events nobody listens to, so
        # it stays out of the statistics and the samples.
        setup = FastHttpSession(
            self.host,
            request_event=EventHook(),
            user=None,
            insecure=False,
            ssl_context_factory=tls_context,
        )
        operator = {"Authorization": f"Bearer {API_KEY}"}
        name = f"load-{uuid.uuid4().hex[:12]}"
        common_name = f"{name}.load.example.com"

        def call(method: str, path: str, body: object, headers: dict[str, str]) -> Any:
            with setup.request(
                method, path, json=body, headers=headers, catch_response=True
            ) as response:
                if response.status_code not in (200, 201, 202, 409):
                    raise SetupError(f"{method} {path}: {response.status_code} {response.text}")
                return response.status_code, response.json()

        call("POST", "/api/v1/owners", _owner(), operator)  # 409 once it exists
        status, agent = call(
            "POST",
            "/api/v1/agents/register",
            {"name": name, "hostname": common_name, "os": "linux", "version": "load"},
            {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"},
        )
        _expect(status, 201, "register")
        self.agent_id = agent["agent_id"]
        self.auth = {"Authorization": f"Bearer {agent['agent_key']}"}
        self.operator = operator
        status, target = call(
            "POST",
            "/api/v1/targets",
            {
                "name": name,
                "type": "File",
                "agent_id": self.agent_id,
                "config": {
                    "cert_path": f"/srv/{name}/cert.pem",
                    "key_path": f"/srv/{name}/key.pem",
                    "reload_command": "/bin/true",
                    "validate_command": "/bin/true",
                },
            },
            operator,
        )
        _expect(status, 201, "create target")
        status, created = call(
            "POST",
            "/api/v1/certificates",
            {
                "name": name,
                "common_name": common_name,
                "sans": [common_name],
                "owner_id": OWNER_ID,
                "target_ids": [target["id"]],
            },
            operator,
        )
        _expect(status, 201, "create certificate")
        self.cert_id = created["certificate"]["id"]
        # The agent's half of issuance: its own key, a CSR for the certificate's name.
        status, _ = call(
            "POST",
            f"/api/v1/agents/{self.agent_id}/csr",
            {"job_id": created["job_ids"][0], "csr_pem": _csr(common_name)},
            self.auth,
        )
        _expect(status, 200, "submit CSR")
        self.running: list[str] = []
        self.step = 0
        self.steps: tuple[Callable[[], None], ...] = (
            self.heartbeat,
            self.work,
            self.report,
            self.work,
            self.deploy,
        )
        self.stagger()

    @task
    def next_call(self) -> None:
        """One request per task run, so ``constant_throughput`` paces requests."""
        call = self.steps[self.step]
        self.step = (self.step + 1) % len(self.steps)
        call()

    def heartbeat(self) -> None:
        self.client.post(
            f"/api/v1/agents/{self.agent_id}/heartbeat",
            json={},
            headers=self.auth,
            name="heartbeat",
        )

    def work(self) -> None:
        with self.client.get(
            f"/api/v1/agents/{self.agent_id}/work",
            headers=self.auth,
            name="work",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text}")
                return
            for job in response.json()["jobs"]:
                if job["type"] == "Deployment" and job["status"] == "Running":
                    self.running.append(job["job_id"])

    def report(self) -> None:
        if not self.running:
            # Only when the last deploy failed: keep the pace with a poll instead.
            self.work()
            return
        job_id = self.running.pop(0)
        self.client.post(
            f"/api/v1/agents/{self.agent_id}/jobs/{job_id}/status",
            json={"status": "Completed", "verification": {"status": "Skipped"}},
            headers=self.auth,
            name="status",
        )

    def deploy(self) -> None:
        self.client.post(
            f"/api/v1/certificates/{self.cert_id}/deploy",
            json={},
            headers=self.operator,
            name="operator: deploy",
        )


def _owner() -> dict[str, str]:
    return {"id": OWNER_ID, "name": "load test", "email": "load@example.com"}


def _expect(status: int, wanted: int, what: str) -> None:
    if status != wanted:
        raise SetupError(f"{what} answered {status}, expected {wanted}")


def _csr(common_name: str) -> str:
    """A CSR for ``common_name`` from a fresh ECDSA P-256 key, as an agent makes it."""
    names = SubjectAltNames(dns=(common_name,))
    return build_csr(generate_key(), common_name=common_name, sans=names).decode()
