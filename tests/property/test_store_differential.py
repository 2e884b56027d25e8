"""MemoryStore is an exact model of PostgresStore: random operation sequences, run on both,
give equal results and equal errors.

The test gets a fresh database cloned from the migrated template, and every example starts
from empty tables (a superuser-only reset with triggers off, cheaper than a new database
per example). Hypothesis drives the state machine synchronously, so it runs in a worker
thread and reaches the stores on the trio thread with ``trio.from_thread.run``. Ids come
from small pools so that duplicates, missing references and stale compare-and-sets happen
often, and every outcome (value or error type) is compared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

import trio
from conftest_store import (
    PASSPHRASE,
    T0,
    Cluster,
    agent,
    certificate,
    event,
    fresh_database,
    issuer,
    job,
    owner,
    policy,
    target,
    team,
    version,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from certctl.core.jobs import (
    AgentOffline,
    Approved,
    Cancel,
    Claimed,
    CSRRequested,
    CSRSubmitted,
    Event,
    Failure,
    IllegalTransition,
    Rejected,
    RetryDue,
    Succeeded,
    TimedOut,
    create_job,
    transition,
)
from certctl.core.model import (
    ActorType,
    AgentStatus,
    CertificateStatus,
    Job,
    JobStatus,
    JobType,
    Revocation,
    RevocationReason,
)
from certctl.pki.errors import SealError
from certctl.services.rules import DOMAIN_RULES
from certctl.store.base import AuditQuery, CertificateQuery, JobQuery, Page, Store
from certctl.store.errors import StoreError
from certctl.store.memory import MemoryStore
from certctl.store.postgres import PostgresStore, open_postgres_store
from certctl.store.rows import TABLES

CERTS = st.sampled_from(["c0", "c1"])
OWNERS = st.sampled_from(["o0", "o1"])
TEAMS = st.sampled_from(["t0", "t1"])
POLICIES = st.sampled_from(["p0", "p1"])
ISSUERS = st.sampled_from(["i0", "i1"])
AGENTS = st.sampled_from(["a0", "a1"])
TARGETS = st.sampled_from(["g0", "g1"])
JOBS = st.sampled_from([f"j{i}" for i in range(4)])
VERSIONS = st.sampled_from([f"v{i}" for i in range(6)])
NAMES = st.sampled_from(["alpha", "beta", "gamma"])
KEY_HASHES = st.sampled_from(["a" * 64, "b" * 64, "c" * 64])
TIMES = st.builds(
    lambda days, hours: T0 + timedelta(days=days, hours=hours),
    st.integers(0, 120),
    st.sampled_from([0, 1, 12]),
)
LIMITS = st.integers(1, 4)
SECRETS = st.none() | st.dictionaries(st.sampled_from(["token", "password"]), st.text(max_size=8))
CERT_STATUSES = st.sampled_from(CertificateStatus)
DURATIONS = st.sampled_from([timedelta(hours=1), timedelta(days=1), timedelta(days=10)])

Outcome = tuple[str, Any]


def _config(secret: dict[str, str] | None) -> dict[str, Any]:
    return {"url": "https://example"} | ({} if secret is None else {"secret": secret})


WIPE = "SET LOCAL session_replication_role = replica; " + "; ".join(
    f"DELETE FROM {name}" for name in TABLES
)
"""Empties every table: replica mode turns off the audit trigger and the foreign keys for
this transaction only (superuser only, as on the test cluster)."""


BASELINE: tuple[Callable[[Store], Awaitable[Any]], ...] = (
    lambda s: s.create_owner(owner("o0")),
    lambda s: s.create_policy(policy("p0")),
    lambda s: s.create_issuer(issuer("i0", config=_config({"token": "t"}))),
    lambda s: s.create_agent(agent("a0"), "a" * 64),
    lambda s: s.create_target(target("g0", "a0")),
    lambda s: s.create_certificate(
        certificate("c0", owner_id="o0", renewal_policy_id="p0", issuer_id="i0", target_ids=("g0",))
    ),
    lambda s: s.add_version(version("c0", "v0")),
    lambda s: s.create_jobs(
        [
            create_job(
                job_id=job_id,
                job_type=kind,
                certificate_id="c0",
                policy=policy(),
                now=T0,
                target_id="g0" if kind is JobType.DEPLOYMENT else None,
            )
            for job_id, kind in (("j0", JobType.DEPLOYMENT), ("j1", JobType.RENEWAL))
        ]
    ),
)
"""Every example starts from an issued certificate mapped to an agent's target, with a
Deployment and a Renewal job queued, so that short random sequences reach claims,
transitions, renewals and reaping."""


class StoreComparison(RuleBasedStateMachine):
    """``postgres`` is set by the test below, on a database of its own."""

    postgres: ClassVar[PostgresStore]
    examples: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        StoreComparison.examples += 1
        self.memory = MemoryStore(DOMAIN_RULES, encryption_key=PASSPHRASE)
        trio.from_thread.run(lambda: self.postgres._run(lambda conn: conn.execute(WIPE)))
        self.first_seen: dict[str, Job] = {}
        for step in BASELINE:
            self.both(step)

    def teardown(self) -> None:
        self.compare_all_queries()

    @rule()
    def compare_all_queries(self) -> None:
        """Every read, at representative arguments, on the state reached so far: a write
        that diverged shows up here even if no rule happened to read it back."""
        for now in (T0, T0 + timedelta(days=65), T0 + timedelta(days=200)):
            self.walk(lambda s, c, now=now: s.due_renewals(now, limit=3, cursor=c))
            self.both(lambda s, now=now: s.jobs_due_for_retry(now, limit=10))
            for wait in (timedelta(hours=1), timedelta(days=10)):
                self.both(
                    lambda s, now=now, wait=wait: s.jobs_on_lost_agents(
                        now, offline_after=wait, limit=10
                    )
                )
                self.both(
                    lambda s, now=now, wait=wait: s.timed_out_jobs(
                        now, awaiting_csr=wait, awaiting_approval=wait, limit=10
                    )
                )
        for agent_id in ("a0", "a1"):
            self.both(lambda s, a=agent_id: s.awaiting_csr_jobs(a))
            self.both(lambda s, a=agent_id: s.agent_dependencies(a))
        self.walk(lambda s, c: s.list_certificates(limit=3, cursor=c))
        self.walk(lambda s, c: s.list_jobs(limit=3, cursor=c))
        self.walk(lambda s, c: s.list_audit(limit=3, cursor=c))
        for listing in (
            lambda s: s.list_agents(),
            lambda s: s.list_targets(),
            lambda s: s.list_issuers(),
            lambda s: s.list_revocations(),
            lambda s: s.list_policies(),
            lambda s: s.list_owners(),
        ):
            self.both(listing)

    # -- running one operation on both stores ------------------------------------------

    @staticmethod
    def _outcome(store: Store, op: Callable[[Store], Awaitable[Any]]) -> Outcome:
        try:
            return ("ok", trio.from_thread.run(lambda: op(store)))
        except (StoreError, ValueError, SealError) as exc:
            return ("error", type(exc))

    def both(self, op: Callable[[Store], Awaitable[Any]]) -> Any:
        """Run ``op`` on both stores, require equal outcomes, return the value (or None)."""
        memory = self._outcome(self.memory, op)
        postgres = self._outcome(self.postgres, op)
        assert memory == postgres
        return memory[1] if memory[0] == "ok" else None

    def walk(self, page: Callable[[Store, str | None], Awaitable[Page[Any]]]) -> None:
        """Walk every page of a keyset listing on both stores, page by page."""
        cursor = None
        for _ in range(50):
            result = self.both(lambda s, c=cursor: page(s, c))
            if result is None or result.next_cursor is None:
                return
            cursor = result.next_cursor
        raise AssertionError("a keyset walk did not end")

    # -- reference data ------------------------------------------------------------------

    @rule(team_id=TEAMS, name=NAMES)
    def create_team(self, team_id: str, name: str) -> None:
        self.both(lambda s: s.create_team(team(team_id, name=name)))

    @rule(owner_id=OWNERS, team_id=st.none() | TEAMS)
    def create_owner(self, owner_id: str, team_id: str | None) -> None:
        self.both(lambda s: s.create_owner(owner(owner_id, team_id=team_id)))

    @rule(policy_id=POLICIES, window=st.sampled_from([1, 30, 60]), update=st.booleans())
    def write_policy(self, policy_id: str, window: int, update: bool) -> None:
        value = policy(policy_id, renewal_window_days=window, max_retries=window % 3)
        self.both(lambda s: (s.update_policy if update else s.create_policy)(value))

    @rule(team_id=TEAMS, owner_id=OWNERS, policy_id=POLICIES)
    def delete_reference_data(self, team_id: str, owner_id: str, policy_id: str) -> None:
        self.both(lambda s: s.delete_team(team_id))
        self.both(lambda s: s.delete_owner(owner_id))
        self.both(lambda s: s.delete_policy(policy_id))
        self.both(lambda s: s.list_teams())
        self.both(lambda s: s.list_owners(team_id=team_id))

    @rule(issuer_id=ISSUERS, name=NAMES, secret=SECRETS, update=st.booleans())
    def write_issuer(
        self, issuer_id: str, name: str, secret: dict[str, str] | None, update: bool
    ) -> None:
        value = issuer(issuer_id, name=name, config=_config(secret))
        self.both(lambda s: (s.update_issuer if update else s.create_issuer)(value))
        self.both(lambda s: s.issuer_secret(issuer_id))
        self.both(lambda s: s.list_issuers())

    @rule(issuer_id=ISSUERS)
    def delete_issuer(self, issuer_id: str) -> None:
        self.both(lambda s: s.delete_issuer(issuer_id))

    # -- agents and targets ----------------------------------------------------------------

    @rule(agent_id=AGENTS, name=NAMES, key_hash=KEY_HASHES, at=st.none() | TIMES)
    def create_agent(self, agent_id: str, name: str, key_hash: str, at: datetime | None) -> None:
        self.both(
            lambda s: s.create_agent(agent(agent_id, name=name, last_heartbeat_at=at), key_hash)
        )
        self.both(lambda s: s.agent_by_key_hash(key_hash))

    @rule(agent_id=AGENTS, at=TIMES, os=st.sampled_from(["", "linux"]))
    def heartbeat(self, agent_id: str, at: datetime, os: str) -> None:
        self.both(lambda s: s.record_heartbeat(agent_id, at, os=os))

    @rule(agent_id=AGENTS, status=st.sampled_from(AgentStatus), stale=st.booleans())
    def set_agent_status(self, agent_id: str, status: AgentStatus, stale: bool) -> None:
        current = self.both(lambda s: s.get_agent(agent_id))
        seen = None if current is None or stale else current.last_heartbeat_at
        self.both(lambda s: s.set_agent_status(agent_id, status, seen_heartbeat_at=seen))

    @rule(agent_id=AGENTS, at=TIMES, cascade=st.booleans())
    def retire_agent(self, agent_id: str, at: datetime, cascade: bool) -> None:
        self.both(lambda s: s.agent_dependencies(agent_id))
        self.both(lambda s: s.retire_agent(agent_id, at, "retired", cascade=cascade))
        self.both(lambda s: s.list_agents())

    @rule(
        target_id=TARGETS,
        agent_id=AGENTS,
        name=NAMES,
        secret=SECRETS,
        update=st.booleans(),
        retired=st.none() | TIMES,
    )
    def write_target(
        self,
        *,
        target_id: str,
        agent_id: str,
        name: str,
        secret: dict[str, str] | None,
        update: bool,
        retired: datetime | None,
    ) -> None:
        value = target(target_id, agent_id, name=name, config=_config(secret), retired_at=retired)
        self.both(lambda s: (s.update_target if update else s.create_target)(value))
        self.both(lambda s: s.target_secret(target_id))

    @rule(agent_id=st.none() | AGENTS, cert_id=st.none() | CERTS)
    def list_targets(self, agent_id: str | None, cert_id: str | None) -> None:
        self.both(lambda s: s.list_targets(agent_id=agent_id, certificate_id=cert_id))

    # -- certificates and versions -----------------------------------------------------------

    @rule(
        cert_id=CERTS,
        name=NAMES,
        owner_id=OWNERS,
        policy_id=POLICIES,
        issuer_id=ISSUERS,
        target_ids=st.lists(TARGETS, max_size=3),
        created_at=TIMES,
        job_id=st.none() | JOBS,
        env=st.sampled_from([None, "prod"]),
    )
    def create_certificate(
        self,
        *,
        cert_id: str,
        name: str,
        owner_id: str,
        policy_id: str,
        issuer_id: str,
        target_ids: list[str],
        created_at: datetime,
        job_id: str | None,
        env: str | None,
    ) -> None:
        cert = certificate(
            cert_id,
            name=name,
            owner_id=owner_id,
            renewal_policy_id=policy_id,
            issuer_id=issuer_id,
            target_ids=tuple(target_ids),
            created_at=created_at,
            updated_at=created_at,
            environment=env,
        )
        jobs = [] if job_id is None else [job(job_id, cert_id, JobType.ISSUANCE, now=created_at)]
        self.both(lambda s: s.create_certificate(cert, jobs=jobs, audit=[event(f"e-{cert_id}")]))

    @rule(
        cert_id=CERTS,
        name=NAMES,
        owner_id=OWNERS,
        policy_id=POLICIES,
        target_ids=st.lists(TARGETS, max_size=3),
        at=TIMES,
    )
    def update_certificate(
        self,
        *,
        cert_id: str,
        name: str,
        owner_id: str,
        policy_id: str,
        target_ids: list[str],
        at: datetime,
    ) -> None:
        current = self.both(lambda s: s.get_certificate(cert_id))
        edited = replace(
            current or certificate(cert_id),
            name=name,
            owner_id=owner_id,
            renewal_policy_id=policy_id,
            target_ids=tuple(target_ids),
            updated_at=at,
        )
        self.both(lambda s: s.update_certificate(edited))

    @rule(cert_id=CERTS, status=CERT_STATUSES, expected=CERT_STATUSES, at=TIMES)
    def set_certificate_status(
        self, cert_id: str, status: CertificateStatus, expected: CertificateStatus, at: datetime
    ) -> None:
        self.both(lambda s: s.set_certificate_status(cert_id, status, expected=expected, at=at))

    @rule(cert_id=CERTS, at=TIMES)
    def archive(self, cert_id: str, at: datetime) -> None:
        self.both(lambda s: s.archive_certificate(cert_id, at))

    @rule(
        cert_id=CERTS,
        version_id=VERSIONS,
        not_before=TIMES,
        days=st.sampled_from([-1, 1, 20, 90]),
        created_at=TIMES,
    )
    def add_version(
        self, cert_id: str, version_id: str, not_before: datetime, days: int, created_at: datetime
    ) -> None:
        value = version(
            cert_id,
            version_id,
            not_before=not_before,
            lifetime=timedelta(days=days),
            created_at=created_at,
        )
        self.both(lambda s: s.add_version(value))
        self.both(lambda s: s.list_versions(cert_id))
        self.both(lambda s: s.latest_version(cert_id))

    @rule(cert_id=CERTS, rev_id=st.sampled_from(["r0", "r1"]), issuer_id=ISSUERS, at=TIMES)
    def revoke(self, cert_id: str, rev_id: str, issuer_id: str, at: datetime) -> None:
        rev = Revocation(
            rev_id, cert_id, f"serial-{cert_id}", RevocationReason.SUPERSEDED, "bob", at, issuer_id
        )
        self.both(lambda s: s.revoke_certificate(rev))
        self.both(lambda s: s.mark_issuer_notified(rev_id))
        self.both(lambda s: s.list_revocations(issuer_id=issuer_id))

    @rule(
        statuses=st.none() | st.frozensets(CERT_STATUSES, max_size=3),
        owner_id=st.none() | OWNERS,
        env=st.sampled_from([None, "prod"]),
        expiring=st.none() | TIMES,
        limit=LIMITS,
    )
    def list_certificates(
        self,
        statuses: frozenset[CertificateStatus] | None,
        owner_id: str | None,
        env: str | None,
        expiring: datetime | None,
        limit: int,
    ) -> None:
        query = CertificateQuery(
            statuses=statuses, owner_id=owner_id, environment=env, expiring_before=expiring
        )
        self.walk(lambda s, c: s.list_certificates(query, limit=limit, cursor=c))

    @rule(now=TIMES, limit=LIMITS)
    def due_renewals(self, now: datetime, limit: int) -> None:
        self.walk(lambda s, c: s.due_renewals(now, limit=limit, cursor=c))

    # -- jobs ----------------------------------------------------------------------------------

    @rule(
        job_id=JOBS,
        cert_id=CERTS,
        job_type=st.sampled_from(JobType),
        status=st.sampled_from(
            [JobStatus.PENDING, JobStatus.AWAITING_CSR, JobStatus.AWAITING_APPROVAL]
        ),
        target_id=TARGETS,
        agent_id=st.none() | AGENTS,
        now=TIMES,
    )
    def create_job(
        self,
        *,
        job_id: str,
        cert_id: str,
        job_type: JobType,
        status: JobStatus,
        target_id: str,
        agent_id: str | None,
        now: datetime,
    ) -> None:
        deployment = job_type is JobType.DEPLOYMENT
        new = job(
            job_id,
            cert_id,
            job_type,
            now=now,
            status=JobStatus.PENDING if deployment else status,
            target_id=target_id if deployment else None,
            agent_id=agent_id if deployment else None,
        )
        self.both(lambda s: s.create_jobs([new], audit=[event(f"e-{job_id}", at=now)]))

    @rule(job_id=JOBS, target_id=TARGETS, now=TIMES)
    def deploy(self, job_id: str, target_id: str, now: datetime) -> None:
        """A Deployment job for c0, claimed by its target's agent as the work poll does."""
        new = job(job_id, "c0", JobType.DEPLOYMENT, now=now, target_id=target_id)
        self.both(lambda s: s.create_jobs([new]))
        routed = self.both(lambda s: s.get_target(target_id))
        if routed is not None:
            self.both(lambda s: s.claim_jobs(agent_id=routed.agent_id, now=now, limit=2))

    @rule(agent_id=st.none() | AGENTS, now=TIMES, limit=LIMITS)
    def claim(self, agent_id: str | None, now: datetime, limit: int) -> None:
        self.both(lambda s: s.claim_jobs(agent_id=agent_id, now=now, limit=limit))

    @rule(
        job_id=JOBS,
        kind=st.sampled_from(
            [
                CSRRequested,
                CSRSubmitted,
                Succeeded,
                Failure,
                TimedOut,
                AgentOffline,
                RetryDue,
                Approved,
                Rejected,
                Cancel,
                Claimed,
            ]
        ),
        now=TIMES,
        draw=st.sampled_from([0.0, 0.5]),
        stale=st.booleans(),
        fanout=st.booleans(),
    )
    def transition(
        self,
        *,
        job_id: str,
        kind: type[Event],
        now: datetime,
        draw: float,
        stale: bool,
        fanout: bool,
    ) -> None:
        current = self.both(lambda s: s.get_job(job_id))
        if current is None:
            return
        previous = self.first_seen.setdefault(job_id, current) if stale else current
        try:
            new, _ = transition(previous, self._event(kind, previous), now, jitter_draw=draw)
        except IllegalTransition:
            return
        create = (
            [
                job(
                    f"{job_id}-d",
                    current.certificate_id,
                    JobType.DEPLOYMENT,
                    now=now,
                    target_id="g0",
                )
            ]
            if fanout
            else []
        )
        deployed = now if new.status is JobStatus.COMPLETED else None
        self.both(lambda s: s.transition_job(previous, new, create=create, deployed_at=deployed))

    def _event(self, kind: type[Event], job: Job) -> Event:
        if kind is Failure:
            return Failure("boom")
        if kind is TimedOut:
            return TimedOut(timedelta(hours=1))
        if kind is AgentOffline:
            return AgentOffline(job.agent_id or "a0", None)
        if kind is Claimed:
            return Claimed(job.agent_id if job.type is JobType.DEPLOYMENT else None)
        return kind()

    @rule(
        statuses=st.none() | st.frozensets(st.sampled_from(JobStatus), max_size=3),
        cert_id=st.none() | CERTS,
        agent_id=st.none() | AGENTS,
        limit=LIMITS,
    )
    def list_jobs(
        self,
        statuses: frozenset[JobStatus] | None,
        cert_id: str | None,
        agent_id: str | None,
        limit: int,
    ) -> None:
        query = JobQuery(statuses=statuses, certificate_id=cert_id, agent_id=agent_id)
        self.walk(lambda s, c: s.list_jobs(query, limit=limit, cursor=c))

    @rule(now=TIMES, limit=LIMITS, wait=DURATIONS, agent_id=AGENTS)
    def reaper_queries(self, now: datetime, limit: int, wait: timedelta, agent_id: str) -> None:
        self.both(lambda s: s.jobs_due_for_retry(now, limit=limit))
        self.both(
            lambda s: s.timed_out_jobs(now, awaiting_csr=wait, awaiting_approval=wait, limit=limit)
        )
        self.both(lambda s: s.jobs_on_lost_agents(now, offline_after=wait, limit=limit))
        self.both(lambda s: s.awaiting_csr_jobs(agent_id))

    # -- audit -----------------------------------------------------------------------------------

    @rule(
        ids=st.lists(st.sampled_from(["e0", "e1", "e2"]), min_size=1, max_size=2),
        at=TIMES,
        actor=st.sampled_from(["alice", "bob"]),
    )
    def append_audit(self, ids: list[str], at: datetime, actor: str) -> None:
        events = [event(i, at=at, actor=actor, details={"n": [1, {"k": i}]}) for i in ids]
        self.both(lambda s: s.append_audit(events))

    @rule(
        actor=st.sampled_from([None, "alice"]),
        actor_type=st.sampled_from([None, ActorType.USER]),
        since=st.none() | TIMES,
        limit=LIMITS,
    )
    def list_audit(
        self, actor: str | None, actor_type: ActorType | None, since: datetime | None, limit: int
    ) -> None:
        query = AuditQuery(actor=actor, actor_type=actor_type, since=since)
        self.walk(lambda s, c: s.list_audit(query, limit=limit, cursor=c))


async def test_memory_store_matches_postgres(pg_cluster: Cluster) -> None:
    """At least 200 examples in every profile; the long soak profile runs a tenth of its
    budget here, since each step is a pair of database round trips."""
    examples = max(200, settings.default.max_examples // 10)
    async with (
        fresh_database(pg_cluster) as dsn,
        open_postgres_store(dsn, DOMAIN_RULES, max_size=2, encryption_key=PASSPHRASE) as postgres,
    ):
        StoreComparison.postgres = postgres
        StoreComparison.examples = 0
        await trio.to_thread.run_sync(
            lambda: run_state_machine_as_test(
                StoreComparison,
                settings=settings(
                    max_examples=examples,
                    stateful_step_count=25,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow],
                ),
            )
        )
        assert StoreComparison.examples >= examples
