"""Shared harness of the ``test_services_*`` suites (no tests of its own).

``ServiceEnv`` builds ``Services`` over a store with a settable clock, a local CA and a
seeded ``random.Random``, and seeds what a certificate needs: owner, issuer, policy, and
registered agents (with their real keys) owning targets. The local CA's root is made once
per process and copied into each test's data dir, because creating one seals its key with
scrypt (a third of a second); everything else about the CA (revocations, CRL numbers) is
per test.
"""

from __future__ import annotations

import functools
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from conftest_store import T0, issuer, owner, policy, target, team

from certctl.connectors.issuers.local import ROOT_CERT, ROOT_KEY, LocalCA, LocalCAConfig
from certctl.core.model import (
    ActorType,
    Agent,
    AuditEvent,
    Job,
    JobStatus,
    JobType,
    KeyRole,
    RenewalPolicy,
)
from certctl.pki.csr import build_csr
from certctl.pki.keys import generate_key
from certctl.pki.names import SubjectAltNames
from certctl.protocol import HostFacts
from certctl.services import agents, certificates
from certctl.services.certificates import CertificateInput
from certctl.services.context import Actor, Services
from certctl.services.issuers import IssuerDefaults, IssuerPool
from certctl.services.rules import DOMAIN_RULES
from certctl.store.base import AuditQuery, JobQuery, Store
from certctl.store.memory import MemoryStore

PASSPHRASE = "x" * 32
ISSUER_ID = "issuer-1"
POLICY_ID = "policy-1"
OPERATOR = Actor("alice", ActorType.USER, role=KeyRole.ADMIN)
APPROVER = Actor("bob", ActorType.USER, role=KeyRole.ADMIN)
"""A second admin: the two-person rule keeps ``OPERATOR`` from deciding its own jobs."""


class SettableClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta

    def set(self, moment: datetime) -> None:
        self.current = moment


@functools.cache
def _root_dir() -> Path:
    """A local CA root created once per process (valid from a day before T0 for ten years)."""
    data = Path(tempfile.mkdtemp(prefix="certctl-services-ca-"))
    LocalCA.open(LocalCAConfig(data_dir=data, passphrase=PASSPHRASE), T0 - timedelta(days=1))
    return data


def install_root(data_dir: Path, issuer_id: str = ISSUER_ID) -> None:
    target_dir = data_dir / "issuers" / issuer_id
    target_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in (ROOT_CERT, ROOT_KEY):
        shutil.copy2(_root_dir() / name, target_dir / name)


@dataclass
class RegisteredAgent:
    agent: Agent
    key: str
    target_ids: list[str] = field(default_factory=list)


@dataclass
class ServiceEnv:
    services: Services
    clock: SettableClock
    store: Store
    policy: RenewalPolicy

    @classmethod
    async def build(
        cls, data_dir: Path, store: Store | None = None, **policy_changes: Any
    ) -> ServiceEnv:
        store = store if store is not None else MemoryStore(DOMAIN_RULES, encryption_key=PASSPHRASE)
        clock = SettableClock(T0)
        install_root(data_dir)
        services = Services(
            store=store,
            clock=clock,
            issuers=IssuerPool(IssuerDefaults(data_dir=data_dir, passphrase=PASSPHRASE)),
            rng=random.Random(1),
        )
        await store.create_team(team())
        await store.create_owner(owner(team_id="team-1"))
        stored_policy = await store.create_policy(policy(POLICY_ID, **policy_changes))
        await store.create_issuer(issuer(ISSUER_ID))
        return cls(services, clock, store, stored_policy)

    async def agent(self, name: str, *targets: str, **target_changes: Any) -> RegisteredAgent:
        """Register agent ``name`` (through the service) owning ``targets``."""
        registered, key = await agents.register(
            self.services, name, HostFacts(hostname=f"{name}.example.com")
        )
        for target_id in targets:
            await self.store.create_target(
                target(target_id, registered.id, **target_changes.get(target_id, {}))
            )
        return RegisteredAgent(registered, key, list(targets))

    async def certificate(
        self,
        *target_ids: str,
        common_name: str = "www.example.com",
        sans: tuple[str, ...] = ("www.example.com", "api.example.com"),
        **changes: Any,
    ) -> tuple[str, tuple[str, ...]]:
        data = CertificateInput(
            name=changes.pop("name", common_name),
            common_name=common_name,
            sans=sans,
            owner_id="owner-1",
            issuer_id=changes.pop("issuer_id", ISSUER_ID),
            renewal_policy_id=changes.pop("renewal_policy_id", POLICY_ID),
            target_ids=target_ids,
            **changes,
        )
        cert, job_ids = await certificates.create(self.services, OPERATOR, data)
        return cert.id, job_ids

    async def jobs(self, cert_id: str, *types: JobType) -> tuple[Job, ...]:
        query = JobQuery(certificate_id=cert_id, types=frozenset(types) if types else None)
        return (await self.store.list_jobs(query, limit=1000)).items

    async def audit(self, action: str, resource_id: str | None = None) -> tuple[AuditEvent, ...]:
        query = AuditQuery(action=action, resource_id=resource_id)
        return (await self.store.list_audit(query, limit=1000)).items

    async def issue(
        self, who: RegisteredAgent, cert_id: str, *, names: tuple[str, ...] | None = None
    ) -> tuple[Job, Any]:
        """Answer the certificate's AwaitingCSR job with a fresh key's CSR, as an agent."""
        (job,) = [
            j
            for j in await self.jobs(cert_id, JobType.ISSUANCE, JobType.RENEWAL)
            if j.status is JobStatus.AWAITING_CSR
        ]
        cert = await self.store.get_certificate(cert_id)
        return await agents.submit_csr(
            self.services, who.agent, job.id, csr(cert.common_name, names or cert.sans)
        )


def csr(common_name: str, sans: tuple[str, ...]) -> str:
    """A CSR for ``common_name`` and ``sans`` signed by a fresh ECDSA P-256 key."""
    key = generate_key()
    return build_csr(key, common_name=common_name, sans=SubjectAltNames(dns=sans)).decode()
