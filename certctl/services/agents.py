"""Agents: registration, key auth, heartbeats, work, CSRs, status reports, retirement.

Every call an agent makes is bound to its own identity: the key resolves to one agent, and
each job, certificate or target it touches must be routed to that agent, else
``Forbidden``. The earlier implementation let any key report any job.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

import trio

from certctl.core import agents as core_agents
from certctl.core import jobs as core
from certctl.core.model import (
    ActorType,
    Agent,
    CertificateVersion,
    Job,
    JobStatus,
    JobType,
    KeyAlgorithm,
    ManagedCertificate,
    Target,
)
from certctl.protocol import (
    CertificateMaterial,
    CSRAnswer,
    HeartbeatAnswer,
    HostFacts,
    IssuedVersion,
    TargetSpec,
    Verification,
    WorkItem,
)
from certctl.services import audit, jobs, metrics
from certctl.services.certificates import newest_version, split_chain
from certctl.services.context import SYSTEM, Actor, Services
from certctl.services.errors import Forbidden, Gone, InvalidInput, StateConflict
from certctl.services.issuance import sign_csr
from certctl.services.profiles import profile_of
from certctl.store.base import JobQuery
from certctl.store.errors import Conflict, NotFound

KEY_BYTES = 32


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def actor_of(agent: Agent) -> Actor:
    return Actor(agent.name, ActorType.AGENT, agent_id=agent.id)


def bootstrap_token_matches(presented: str, expected: str) -> bool:
    """Constant-time, including for a length mismatch (both sides are hashed first)."""
    return bool(expected) and hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


async def register(services: Services, name: str, info: HostFacts) -> tuple[Agent, str]:
    """A new agent and its key; the key is returned once and only its hash is stored."""
    if not name.strip() or not info.hostname.strip():
        raise InvalidInput("name and hostname are required; send the agent's name and host.")
    key = secrets.token_urlsafe(KEY_BYTES)
    now = services.now()
    agent = Agent(
        id=services.new_id("agent"),
        name=name,
        hostname=info.hostname,
        registered_at=now,
        last_heartbeat_at=now,
        os=info.os,
        architecture=info.architecture,
        ip_address=info.ip_address,
        version=info.version,
    )
    stored = await services.store.create_agent(
        agent,
        key_hash(key),
        audit=[
            audit.event(
                services,
                actor_of(agent),
                "agent_registered",
                "agent",
                agent.id,
                details={"hostname": info.hostname, "version": info.version},
            )
        ],
    )
    return stored, key


async def authenticate(services: Services, key: str, agent_id: str) -> Agent:
    """The agent owning ``key``, which must be the agent named in the path.

    ``NotFound`` for an unknown key (401 to the caller), ``Forbidden`` for another agent's
    path, ``Gone`` once retired.
    """
    agent = await services.store.agent_by_key_hash(key_hash(key))
    if agent.id != agent_id:
        raise Forbidden(
            f"this agent key belongs to agent {agent.id}, not {agent_id}; "
            "call your own /agents/{id} paths."
        )
    if agent.retired_at is not None:
        raise Gone(f"agent {agent.id} was retired; stop it and uninstall or re-register it.")
    return agent


async def heartbeat(services: Services, agent: Agent, info: HostFacts) -> HeartbeatAnswer:
    """Record the facts the agent sent; the answer carries the server's clock."""
    now = services.now()
    try:
        recorded = await services.store.record_heartbeat(
            agent.id,
            now,
            hostname=info.hostname,
            os=info.os,
            architecture=info.architecture,
            ip_address=info.ip_address,
            version=info.version,
        )
    except Conflict:
        raise Gone(f"agent {agent.id} was retired; stop it.") from None
    metrics.AGENT_HEARTBEATS.inc()
    return HeartbeatAnswer(status=recorded.status, server_time=now)


async def work(
    services: Services, agent: Agent, *, resume: bool = False, limit: int = 50
) -> list[WorkItem]:
    """Claim the agent's Pending deployments and list the CSRs it owes.

    ``resume`` (an agent's first poll after it started) also hands back the deployments
    it had claimed before: an agent killed mid-deploy repairs its files on start and then
    finishes those jobs, instead of leaving them Running while it heartbeats normally.
    """
    resumed: tuple[Job, ...] = ()
    if resume:
        page = await services.store.list_jobs(
            JobQuery(
                statuses=frozenset({JobStatus.RUNNING}),
                types=frozenset({JobType.DEPLOYMENT}),
                agent_id=agent.id,
            ),
            limit=limit,
        )
        resumed = page.items
    claimed = await services.store.claim_jobs(agent_id=agent.id, now=services.now(), limit=limit)
    awaiting = await services.store.awaiting_csr_jobs(agent.id)
    items = []
    for job in (*awaiting, *resumed, *claimed):
        cert = await services.store.get_certificate(job.certificate_id)
        algorithm, size = await _key_spec(services, cert)
        target = None
        if job.target_id is not None:
            target = await _spec(services, await services.store.get_target(job.target_id))
        items.append(
            WorkItem(
                job_id=job.id,
                type=job.type,
                status=job.status,
                certificate_id=cert.id,
                common_name=cert.common_name,
                sans=cert.sans,
                key_algorithm=algorithm,
                key_size=size,
                target=target,
            )
        )
    return items


async def poll(
    services: Services,
    agent: Agent,
    *,
    wait: float,
    facts: HostFacts | None = None,
    resume: bool = False,
) -> tuple[list[WorkItem], float]:
    """``work``, held for up to ``wait`` seconds until there is some: the long poll.

    Returns the items and the wait granted (0: answered as a short poll, because none was
    asked or this process holds its maximum of waiting polls or is stopping). A granted
    poll is the agent's heartbeat: it is recorded (coalesced, ``services.sightings``)
    when it arrives and when it ends. The database is checked when the poll arrives,
    unless the agent is known idle, and again each time it is woken; a poll that times
    out has made no query at all.
    """
    wakeups = services.wakeups
    with wakeups.slot(agent.id) as waiter:
        if wait <= 0 or waiter is None:
            items = await work(services, agent, resume=resume)
            metrics.AGENT_POLLS.labels("short", "work" if items else "empty").inc()
            return items, 0
        services.sightings.seen(agent.id, services.now(), facts)
        metrics.WAITING_POLLS.set(wakeups.waiting)
        items = []
        with trio.move_on_after(wait):
            while not wakeups.closed:
                waiter.arm()
                if resume or not wakeups.known_idle(agent.id):
                    items = await _check(services, agent, resume=resume)
                    resume = False
                    if items:
                        break
                await waiter.event.wait()
    metrics.WAITING_POLLS.set(wakeups.waiting)
    services.sightings.seen(agent.id, services.now())
    metrics.AGENT_POLLS.labels("long", "work" if items else "empty").inc()
    return items, wait


async def _check(services: Services, agent: Agent, *, resume: bool) -> list[WorkItem]:
    """One database check of a long poll, leaving the agent known idle if it found none."""
    wakeups = services.wakeups
    wakeups.checking(agent.id)
    try:
        items = await work(services, agent, resume=resume)
    except BaseException:
        wakeups.busy(agent.id)
        raise
    if items:
        wakeups.busy(agent.id)
    return items


async def submit_csr(
    services: Services, agent: Agent, job_id: str, csr_pem: str
) -> tuple[Job, CertificateVersion]:
    job = await services.store.get_job(job_id)
    if job.type is JobType.DEPLOYMENT:
        raise InvalidInput(f"job {job_id} is a Deployment job and takes no CSR.", field="job_id")
    await _certificate_of(services, agent, job.certificate_id)
    return await sign_csr(services, actor_of(agent), job, csr_pem)


async def answer_csr(services: Services, agent: Agent, job_id: str, csr_pem: str) -> CSRAnswer:
    """``submit_csr`` as the protocol answers it: the job's new state and what was issued."""
    job, version = await submit_csr(services, agent, job_id, csr_pem)
    issued = IssuedVersion(
        id=version.id,
        serial_number=version.serial_number,
        fingerprint_sha256=version.fingerprint_sha256,
        not_before=version.not_before,
        not_after=version.not_after,
    )
    return CSRAnswer(job_id=job.id, status=job.status, version=issued)


async def certificate(services: Services, agent: Agent, cert_id: str) -> CertificateMaterial:
    """The newest version of one of the agent's own certificates (no key: it has it)."""
    cert = await _certificate_of(services, agent, cert_id)
    latest = await newest_version(services, cert_id)
    await services.store.append_audit(
        [
            audit.event(
                services,
                actor_of(agent),
                "certificate_retrieved",
                "certificate",
                cert_id,
                details={"version": latest.id},
            )
        ]
    )
    leaf, chain = split_chain(latest.pem_chain)
    return CertificateMaterial(
        certificate_id=cert.id,
        version_id=latest.id,
        serial_number=latest.serial_number,
        fingerprint_sha256=latest.fingerprint_sha256,
        not_after=latest.not_after,
        cert_pem=leaf,
        chain_pem=chain,
    )


async def job_of(services: Services, agent: Agent, job_id: str) -> Job:
    job = await services.store.get_job(job_id)
    if job.agent_id == agent.id:
        return job
    if job.type is not JobType.DEPLOYMENT and job.status is JobStatus.AWAITING_CSR:
        await _certificate_of(services, agent, job.certificate_id)
        return job
    raise Forbidden(f"job {job_id} belongs to another agent; report only your own jobs.")


async def report(
    services: Services,
    agent: Agent,
    job_id: str,
    *,
    completed: bool,
    error: str | None,
    verification: Verification | None,
) -> Job:
    job = await services.store.get_job(job_id)
    if job.type is not JobType.DEPLOYMENT or job.agent_id != agent.id:
        raise Forbidden(f"job {job_id} is not a deployment of agent {agent.id}; report your own.")
    if job.status is not JobStatus.RUNNING:
        raise StateConflict(f"job {job_id} is {job.status}, not Running; drop it and poll again.")
    event: core.Event = (
        core.Succeeded()
        if completed
        else core.Failure(error or "the agent reported a failure without a reason")
    )
    changes = {}
    if verification is not None:
        changes = {
            "verification_status": verification.status,
            "verification_fingerprint": verification.fingerprint,
            "verification_error": verification.error,
            "verified_at": services.now(),
        }
    try:
        return await jobs.apply(services, job, event, actor_of(agent), **changes)
    except Conflict:
        raise StateConflict(f"job {job_id} changed while the report arrived; poll again.") from None


async def targets(services: Services, agent: Agent) -> list[TargetSpec]:
    """The agent's usable targets, each with its configuration including secrets."""
    return [
        await _spec(services, t)
        for t in await services.store.list_targets(agent_id=agent.id)
        if t.enabled and t.retired_at is None
    ]


async def _spec(services: Services, target: Target) -> TargetSpec:
    """The target as the agent receives it: its configuration with its secret, which only
    the agent ever receives."""
    secret = await services.store.target_secret(target.id)
    config = {**target.config, **({"secret": secret} if secret else {})}
    return TargetSpec(id=target.id, name=target.name, type=target.type, config=config)


async def retire(
    services: Services, actor: Actor, agent_id: str, *, reason: str, cascade: bool
) -> Agent:
    if cascade and not reason.strip():
        raise InvalidInput("reason is required with force=true; say why the agent is retired.")
    dependencies = await services.store.agent_dependencies(agent_id)
    if dependencies.total and not cascade:
        raise StateConflict(
            f"agent {agent_id} still has {dependencies.targets} targets, "
            f"{dependencies.certificates} certificates and {dependencies.jobs} active jobs; "
            "move them or pass force=true with a reason."
        )
    return await services.store.retire_agent(
        agent_id,
        services.now(),
        reason or "retired by operator",
        cascade=cascade,
        audit=[
            audit.event(
                services,
                actor,
                "agent_retired",
                "agent",
                agent_id,
                details={"reason": reason, "cascade": cascade},
            )
        ],
    )


# -- scheduler loops ------------------------------------------------------------------


async def update_liveness(services: Services) -> int:
    """Flip agents Online/Offline from their heartbeats; returns how many changed."""
    changed = 0
    for agent in await services.store.list_agents():
        status = core_agents.status_update(agent, services.now(), services.offline_after)
        if status is None:
            continue
        try:
            await services.store.set_agent_status(
                agent.id, status, seen_heartbeat_at=agent.last_heartbeat_at
            )
            changed += 1
        except (Conflict, NotFound):
            continue
    return changed


async def reap_lost(services: Services) -> int:
    """Fail (and so retry) Running jobs of agents that went silent or were retired."""
    now = services.now()
    offline_after = services.offline_after
    lost = await services.store.jobs_on_lost_agents(
        now, offline_after=offline_after, limit=jobs.BATCH
    )
    for item in lost:
        event = core_agents.reap_event(item.job, item.agent, now, offline_after)
        if event is not None:
            try:
                await jobs.apply(services, item.job, event, SYSTEM)
            except (Conflict, NotFound, core.IllegalTransition):
                continue
    return len(lost)


async def _certificate_of(services: Services, agent: Agent, cert_id: str) -> ManagedCertificate:
    """The certificate, if one of this agent's targets is mapped to it."""
    cert = await services.store.get_certificate(cert_id)
    mine = {t.id for t in await services.store.list_targets(agent_id=agent.id)}
    if not mine.intersection(cert.target_ids):
        raise Forbidden(
            f"certificate {cert_id} is not mapped to a target of agent {agent.id}; "
            "ask only for your own certificates."
        )
    return cert


async def _key_spec(services: Services, cert: ManagedCertificate) -> tuple[KeyAlgorithm, int]:
    """The key the agent should generate: the profile's first allowed rule."""
    rules = (await profile_of(services, cert)).allowed_key_algorithms
    return (rules[0].algorithm, rules[0].min_size) if rules else (KeyAlgorithm.ECDSA, 256)


async def get_agent(services: Services, agent_id: str) -> Agent:
    return await services.store.get_agent(agent_id)


async def list_agents(services: Services) -> Sequence[Agent]:
    return await services.store.list_agents()
