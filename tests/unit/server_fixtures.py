"""Shared harness of the ``test_server_*`` suites (no tests of its own).

``running_app`` builds the real quart-trio app over a ``MemoryStore``, starts it (so the
default issuer and policy are seeded and the audit buffer runs) and hands back an ``Api``:
the quart test client plus the few calls every test needs (register an agent, create an
owner, a target and a certificate, build a CSR). Requests go through the whole middleware
stack: authentication, rate limiting, schemas, error mapping and the audit hook.

The local CA's root is made once per process and copied into each app's data dir, because
creating one seals its key with scrypt (a third of a second).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quart.testing import QuartClient
from quart.wrappers import Response
from quart_trio import QuartTrio

from certctl.config import Settings, load
from certctl.connectors.issuers.local import ROOT_CERT, ROOT_KEY, LocalCA, LocalCAConfig
from certctl.core.clock import SystemClock
from certctl.pki.csr import build_csr
from certctl.pki.keys import generate_key
from certctl.pki.names import SubjectAltNames
from certctl.server.app import Background, create_app
from certctl.server.state import EXTENSION, ServerState
from certctl.server.supervisor import Supervisor
from certctl.services.rules import DOMAIN_RULES
from certctl.store.base import Store
from certctl.store.memory import MemoryStore

ENCRYPTION_KEY = "k" * 40
OPS_KEY = "opskey-0123456789abcdef"
VIEW_KEY = "viewkey-0123456789abcdef"
OPERATOR_KEY = "operkey-0123456789abcdef"
APPROVER_KEY = "apprkey-0123456789abcdef"
BOOTSTRAP = "boot-0123456789abcdef"
DEFAULT_ISSUER = "iss-local"
OPS = {"Authorization": f"Bearer {OPS_KEY}"}
VIEWER = {"Authorization": f"Bearer {VIEW_KEY}"}
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
APPROVER = {"Authorization": f"Bearer {APPROVER_KEY}"}
BOOT = {"Authorization": f"Bearer {BOOTSTRAP}"}
NO_OP = "/bin/true"


def make_settings(data_dir: Path, **extra: str) -> Settings:
    """Settings of a test app: admin keys ``ops`` and ``approver`` (a second admin, for
    the two-person rule), an ``operator`` key, a ``viewer`` key, and ``extra``
    (``CERTCTL_*`` variables) on top."""
    environ = {
        "CERTCTL_API_KEYS": (
            f"ops:{OPS_KEY}:admin,approver:{APPROVER_KEY}:admin,"
            f"operator:{OPERATOR_KEY}:operator,viewer:{VIEW_KEY}:viewer"
        ),
        "CERTCTL_AGENT_BOOTSTRAP_TOKEN": BOOTSTRAP,
        "CERTCTL_DATA_DIR": str(data_dir),
        "CERTCTL_CONFIG_ENCRYPTION_KEY": ENCRYPTION_KEY,
        **extra,
    }
    return load(environ)


@functools.cache
def _root_dir() -> Path:
    """A local CA root sealed with ``ENCRYPTION_KEY``, created once per process."""
    data = Path(tempfile.mkdtemp(prefix="certctl-server-ca-"))
    LocalCA.open(
        LocalCAConfig(data_dir=data, passphrase=ENCRYPTION_KEY),
        datetime.now(UTC) - timedelta(days=1),
    )
    return data


def install_root(data_dir: Path, issuer_id: str = DEFAULT_ISSUER) -> None:
    target_dir = data_dir / "issuers" / issuer_id
    target_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in (ROOT_CERT, ROOT_KEY):
        shutil.copy2(_root_dir() / name, target_dir / name)


def agent_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def csr_pem(common_name: str, sans: tuple[str, ...] = ()) -> str:
    names = SubjectAltNames(dns=(common_name, *sans))
    return build_csr(generate_key(), common_name=common_name, sans=names).decode()


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return agent_headers(self.key)


@dataclass
class Api:
    app: QuartTrio
    client: QuartClient
    data_dir: Path
    _serial: int = 0

    @property
    def state(self) -> ServerState:
        found: ServerState = self.app.extensions[EXTENSION]
        return found

    async def call(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        query: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Response:
        kwargs: dict[str, Any] = {
            "method": method,
            "headers": dict(OPS if headers is None else headers),
        }
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        if query is not None:
            kwargs["query_string"] = dict(query)
        response: Response = await self.client.open(path, **kwargs)
        return response

    async def ok(self, method: str, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        """The JSON body of a call that must answer ``expect``."""
        response = await self.call(method, path, **kwargs)
        body = await response.get_json()
        assert response.status_code == expect, (method, path, response.status_code, body)
        return body

    def unique(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}-{self._serial}"

    async def register_agent(self, name: str | None = None) -> Agent:
        name = name or self.unique("agent")
        body = await self.ok(
            "POST",
            "/api/v1/agents/register",
            expect=201,
            headers=BOOT,
            json={"name": name, "hostname": f"{name}.example.com"},
        )
        return Agent(body["agent_id"], body["agent_key"])

    async def create_owner(self) -> str:
        owner_id = self.unique("owner")
        await self.ok(
            "POST",
            "/api/v1/owners",
            expect=201,
            json={"id": owner_id, "name": "Alice", "email": "alice@example.com"},
        )
        return owner_id

    async def create_target(self, agent_id: str) -> str:
        name = self.unique("web")
        directory = self.data_dir / "targets" / name
        body = await self.ok(
            "POST",
            "/api/v1/targets",
            expect=201,
            json={
                "name": name,
                "type": "NGINX",
                "agent_id": agent_id,
                "config": {
                    "cert_path": str(directory / "cert.pem"),
                    "key_path": str(directory / "key.pem"),
                    "reload_command": NO_OP,
                    "validate_command": NO_OP,
                },
            },
        )
        target_id: str = body["id"]
        return target_id

    async def create_certificate(
        self, target_ids: list[str], *, common_name: str | None = None
    ) -> tuple[str, list[str]]:
        """A certificate mapped to ``target_ids``; its id and the ids of the jobs created."""
        owner_id = await self.create_owner()
        common_name = common_name or f"{self.unique('www')}.example.com"
        body = await self.ok(
            "POST",
            "/api/v1/certificates",
            expect=201,
            json={
                "name": self.unique("cert"),
                "common_name": common_name,
                "sans": [common_name],
                "owner_id": owner_id,
                "target_ids": target_ids,
            },
        )
        cert_id: str = body["certificate"]["id"]
        return cert_id, list(body["job_ids"])

    async def flush_audit(self) -> None:
        await self.state.audit.flush()


@asynccontextmanager
async def running_app(
    settings: Settings,
    store: Store | None = None,
    *,
    with_root: bool = True,
    background: Mapping[str, Background] | None = None,
    supervisor: Supervisor | None = None,
) -> AsyncIterator[Api]:
    """The started app (``before_serving`` ran) and its client; stopped on exit.
    ``background`` tasks (a scheduler) run under the app's supervisor meanwhile."""
    data_dir = settings.effective_data_dir
    if with_root:
        install_root(data_dir)
    store = store if store is not None else MemoryStore(DOMAIN_RULES, encryption_key=ENCRYPTION_KEY)
    app = create_app(
        settings, store, clock=SystemClock(), background=background, supervisor=supervisor
    )
    async with app.test_app() as test_app:
        yield Api(app, test_app.test_client(), data_dir)
