"""The Store contract, checked on both implementations (``store`` is parametrized over
MemoryStore and PostgresStore on the embedded PostgreSQL)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import timedelta

import pytest
import trio
from conftest_store import (
    KEY_HASH,
    T0,
    agent,
    certificate,
    event,
    issuer,
    job,
    owner,
    policy,
    seed,
    target,
    team,
    version,
)

from certctl.core.jobs import (
    CSRRequested,
    CSRSubmitted,
    Failure,
    RetryDue,
    Succeeded,
    transition,
)
from certctl.core.model import (
    ActorType,
    AgentStatus,
    CertificateProfile,
    CertificateStatus,
    JobStatus,
    JobType,
    Revocation,
    RevocationReason,
)
from certctl.core.renewal import renewal_due_at
from certctl.pki.errors import SealError
from certctl.services.rules import DOMAIN_RULES
from certctl.store.base import AuditQuery, CertificateQuery, JobQuery, Sighting, Store
from certctl.store.errors import Conflict, InvalidCursor, NotFound
from certctl.store.memory import MemoryStore

DAY = timedelta(days=1)


async def walk(store: Store, query: CertificateQuery, limit: int) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await store.list_certificates(query, limit=limit, cursor=cursor)
        ids += [c.id for c in page.items]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


# -- simple entities --------------------------------------------------------------------


async def test_team_and_owner_lifecycle(store: Store) -> None:
    created = await store.create_team(team())
    assert await store.get_team("team-1") == created
    await store.create_owner(owner(team_id="team-1"))
    await store.create_owner(owner("owner-2"))
    assert [o.id for o in await store.list_owners(team_id="team-1")] == ["owner-1"]
    assert [o.id for o in await store.list_owners()] == ["owner-1", "owner-2"]

    renamed = await store.update_team(replace(created, name="platform", description="d"))
    assert (renamed.name, renamed.description) == ("platform", "d")
    with pytest.raises(Conflict, match="referenced by owner team_id"):
        await store.delete_team("team-1")
    await store.delete_owner("owner-1")
    await store.delete_team("team-1")
    with pytest.raises(NotFound, match="team 'team-1' does not exist"):
        await store.get_team("team-1")
    with pytest.raises(NotFound):
        await store.delete_team("team-1")
    with pytest.raises(NotFound):
        await store.update_team(team())


async def test_duplicate_ids_and_names_conflict(store: Store) -> None:
    await store.create_team(team())
    with pytest.raises(Conflict, match="already exists; use a new id"):
        await store.create_team(team(name="other"))
    with pytest.raises(Conflict, match="name='name-team-1' already exists"):
        await store.create_team(team("team-2", name="name-team-1"))
    await store.create_team(team("team-2"))
    with pytest.raises(Conflict):
        await store.update_team(team("team-2", name="name-team-1"))
    assert (await store.get_team("team-2")).name == "name-team-2"


async def test_missing_reference_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="owner team_id names no existing team"):
        await store.create_owner(owner(team_id="nope"))
    assert await store.list_owners() == ()


async def test_policy_and_profile_round_trip(store: Store) -> None:
    profile = CertificateProfile("profile-1", "short", max_ttl_seconds=600, allow_short_lived=True)
    assert await store.create_profile(profile) == profile
    full = policy(
        renewal_window_days=10,
        alert_thresholds_days=(20, 3),
        certificate_profile_id="profile-1",
    )
    assert await store.create_policy(full) == full
    assert await store.list_policies() == (full,)
    with pytest.raises(Conflict, match="renewal policy certificate_profile_id"):
        await store.delete_profile("profile-1")
    await store.delete_policy("policy-1")
    await store.delete_profile("profile-1")
    assert await store.list_profiles() == ()


async def test_values_postgres_cannot_hold_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match=r"Team\.name contains a NUL"):
        await store.create_team(team(name="a\x00b"))
    with pytest.raises(ValueError, match=r"Team\.created_at must be timezone-aware"):
        await store.create_team(team(created_at=T0.replace(tzinfo=None)))
    with pytest.raises(ValueError, match=r"CertificateProfile\.max_ttl_seconds is"):
        await store.create_profile(CertificateProfile("p", "p", max_ttl_seconds=2**40))
    assert await store.list_teams() == ()


# -- certificates -----------------------------------------------------------------------


async def test_create_certificate_maps_targets_and_creates_its_job(store: Store) -> None:
    await seed(store)
    issuance = job(job_type=JobType.ISSUANCE)
    cert = await store.create_certificate(
        certificate(target_ids=("target-1", "target-1")),
        jobs=[issuance],
        audit=[event()],
    )
    assert cert.target_ids == ("target-1",)
    assert cert.expires_at is None
    assert await store.get_job("job-1") == issuance
    assert [t.id for t in await store.list_targets(certificate_id="cert-1")] == ["target-1"]
    assert (await store.list_audit()).items == (event(),)


async def test_failed_create_leaves_nothing_behind(store: Store) -> None:
    await seed(store)
    with pytest.raises(NotFound, match="names no existing target"):
        await store.create_certificate(
            certificate(target_ids=("missing",)), jobs=[job()], audit=[event()]
        )
    with pytest.raises(NotFound, match="certificate 'cert-1' does not exist"):
        await store.get_certificate("cert-1")
    assert (await store.list_jobs()).items == ()
    assert (await store.list_audit()).items == ()
    with pytest.raises(ValueError, match="expires_at is set at creation"):
        await store.create_certificate(certificate(expires_at=T0))


async def test_update_certificate_changes_only_descriptive_fields(store: Store) -> None:
    await seed(store)
    await store.create_target(target("target-2"))
    await store.create_certificate(certificate(target_ids=("target-1",)))
    edited = certificate(
        common_name="new.example.com",
        sans=("a.example.com",),
        tags={"env": "prod"},
        status=CertificateStatus.REVOKED,
        target_ids=("target-2",),
        updated_at=T0 + DAY,
    )
    stored = await store.update_certificate(edited)
    assert stored.common_name == "new.example.com"
    assert stored.sans == ("a.example.com",)
    assert dict(stored.tags) == {"env": "prod"}
    assert stored.target_ids == ("target-2",)
    assert stored.status is CertificateStatus.PENDING
    assert stored.updated_at == T0 + DAY
    with pytest.raises(NotFound):
        await store.update_certificate(certificate("cert-9"))


async def test_status_compare_and_set_and_archive(store: Store) -> None:
    await seed(store)
    await store.create_certificate(certificate())
    active = await store.set_certificate_status(
        "cert-1", CertificateStatus.ACTIVE, expected=CertificateStatus.PENDING, at=T0 + DAY
    )
    assert (active.status, active.updated_at) == (CertificateStatus.ACTIVE, T0 + DAY)
    with pytest.raises(Conflict, match="is Active, not the expected Pending"):
        await store.set_certificate_status(
            "cert-1", CertificateStatus.FAILED, expected=CertificateStatus.PENDING, at=T0
        )
    archived = await store.archive_certificate("cert-1", T0 + 2 * DAY)
    assert archived.status is CertificateStatus.ARCHIVED
    with pytest.raises(Conflict, match="already archived"):
        await store.archive_certificate("cert-1", T0 + 3 * DAY)
    with pytest.raises(NotFound):
        await store.archive_certificate("cert-9", T0)


async def test_status_change_creates_its_jobs_in_the_same_transaction(store: Store) -> None:
    await seed(store)
    await store.create_certificate(certificate())
    renewal = job("job-renew", status=JobStatus.AWAITING_CSR)
    with pytest.raises(Conflict):
        await store.set_certificate_status(
            "cert-1",
            CertificateStatus.RENEWAL_IN_PROGRESS,
            expected=CertificateStatus.ACTIVE,
            at=T0,
            audit=[event(action="renewal_triggered")],
            jobs=[renewal],
        )
    with pytest.raises(NotFound):
        await store.get_job("job-renew")
    assert not (await store.list_audit(AuditQuery(action="renewal_triggered"))).items
    changed = await store.set_certificate_status(
        "cert-1",
        CertificateStatus.RENEWAL_IN_PROGRESS,
        expected=CertificateStatus.PENDING,
        at=T0,
        audit=[event(action="renewal_triggered")],
        jobs=[renewal],
    )
    assert changed.status is CertificateStatus.RENEWAL_IN_PROGRESS
    assert (await store.get_job("job-renew")).type is JobType.RENEWAL
    assert len((await store.list_audit(AuditQuery(action="renewal_triggered"))).items) == 1


async def test_keyset_pagination_and_filters(store: Store) -> None:
    await seed(store)
    await store.create_owner(owner("owner-2"))
    for i in range(12):
        await store.create_certificate(
            certificate(
                f"cert-{i:02d}",
                created_at=T0 + (i // 3) * DAY,
                owner_id="owner-2" if i % 2 else "owner-1",
                environment="prod" if i < 4 else "dev",
            )
        )
    everything = await walk(store, CertificateQuery(), limit=5)
    assert everything == [f"cert-{i:02d}" for i in range(12)]
    assert await walk(store, CertificateQuery(owner_id="owner-2"), 2) == everything[1::2]
    assert await walk(store, CertificateQuery(environment="prod"), 3) == everything[:4]
    assert await walk(store, CertificateQuery(team_id="team-1"), 3) == []
    pending = CertificateQuery(statuses=frozenset({CertificateStatus.PENDING}))
    assert len(await walk(store, pending, 100)) == 12
    # No version means no expiry: never "expiring before" anything.
    assert await walk(store, CertificateQuery(expiring_before=T0 + 999 * DAY), 10) == []
    await store.add_version(version("cert-03", created_at=T0))
    soon = CertificateQuery(expiring_before=T0 + 91 * DAY)
    assert await walk(store, soon, 10) == ["cert-03"]

    first = await store.list_certificates(limit=5)
    await store.create_certificate(certificate("cert-00a", created_at=T0))
    second = await store.list_certificates(limit=5, cursor=first.next_cursor)
    assert [c.id for c in second.items] == everything[5:10]
    with pytest.raises(InvalidCursor):
        await store.list_certificates(cursor="not-a-cursor")
    with pytest.raises(ValueError, match="limit is 0"):
        await store.list_certificates(limit=0)


# -- versions and due renewals ----------------------------------------------------------


async def test_versions_set_expiry_from_the_newest(store: Store) -> None:
    await seed(store)
    await store.create_certificate(certificate())
    assert await store.latest_version("cert-1") is None
    assert await store.list_versions("cert-1") == ()
    newer = version("cert-1", "v2", not_before=T0 + 10 * DAY, created_at=T0 + 10 * DAY)
    cert = await store.add_version(newer)
    assert cert.expires_at == newer.not_after
    assert cert.status is CertificateStatus.ACTIVE
    assert cert.last_renewal_at == newer.created_at
    older = version("cert-1", "v1", created_at=T0)
    cert = await store.add_version(older, status=CertificateStatus.ACTIVE)
    assert cert.expires_at == newer.not_after
    assert await store.latest_version("cert-1") == newer
    assert [v.id for v in await store.list_versions("cert-1")] == ["v2", "v1"]
    with pytest.raises(Conflict, match="fingerprint_sha256"):
        await store.add_version(replace(older, id="v3"))
    with pytest.raises(NotFound, match="names no existing certificate"):
        await store.add_version(version("cert-9", "v9"))
    with pytest.raises(NotFound):
        await store.list_versions("cert-9")
    with pytest.raises(ValueError, match="not_after must be later"):
        await store.add_version(version("cert-1", "v4", lifetime=-DAY))


async def test_a_revoked_or_archived_certificate_takes_no_new_version(store: Store) -> None:
    """A signing that raced the revocation (or archiving) must not make it Active again."""
    await seed(store)
    for cert_id in ("cert-1", "cert-2"):
        await store.create_certificate(certificate(cert_id))
        await store.add_version(version(cert_id, f"{cert_id}-v1"))
    await store.revoke_certificate(
        Revocation(
            "rev-1", "cert-1", "serial-cert-1-v1", RevocationReason.KEY_COMPROMISE, "alice", T0,
            "issuer-1",
        )
    )  # fmt: skip
    await store.archive_certificate("cert-2", T0)
    for cert_id, status in (("cert-1", "Revoked"), ("cert-2", "Archived")):
        with pytest.raises(Conflict, match=f"is {status}; it takes no new version"):
            await store.add_version(version(cert_id, f"{cert_id}-v2", not_before=T0 + DAY))
        assert [v.id for v in await store.list_versions(cert_id)] == [f"{cert_id}-v1"]
        assert (await store.get_certificate(cert_id)).status == status


async def test_due_renewals_follow_the_policy(store: Store) -> None:
    await seed(store)
    for i in range(5):
        await store.create_certificate(certificate(f"cert-{i}"))
        await store.add_version(version(f"cert-{i}", f"v{i}", not_before=T0 + i * DAY))
    await store.create_certificate(certificate("never-issued"))
    await store.set_certificate_status(
        "cert-4", CertificateStatus.RENEWAL_IN_PROGRESS, expected=CertificateStatus.ACTIVE, at=T0
    )
    # 90-day certificates, 30-day window: cert-i is due at T0 + (60 + i) days.
    now = T0 + 62 * DAY
    page = await store.due_renewals(now)
    assert [d.certificate.id for d in page.items] == ["cert-0", "cert-1", "cert-2"]
    assert page.items[0].latest.id == "v0"
    assert page.items[0].due_at == T0 + 60 * DAY
    first = await store.due_renewals(now, limit=2)
    rest = await store.due_renewals(now, limit=2, cursor=first.next_cursor)
    assert [d.certificate.id for d in first.items + rest.items] == ["cert-0", "cert-1", "cert-2"]
    assert rest.next_cursor is None

    # A wider window moves every due date of the policy's certificates; cert-4 is due too
    # although its renewal is under way (the scan alerts for it, without renewing).
    await store.update_policy(policy(renewal_window_days=40))
    assert len((await store.due_renewals(now)).items) == 5
    # Moving a certificate to another policy moves its due date too.
    await store.create_policy(policy("policy-2", renewal_window_days=1))
    await store.update_certificate(certificate("cert-0", renewal_policy_id="policy-2"))
    due = await store.due_renewals(now)
    assert [d.certificate.id for d in due.items] == ["cert-1", "cert-2", "cert-3", "cert-4"]
    latest = await store.latest_version("cert-0")
    assert latest is not None
    expected = renewal_due_at(latest.not_before, latest.not_after, policy(renewal_window_days=1))
    assert expected > now


# -- issuers, targets and their secrets ---------------------------------------------------


async def test_secrets_are_split_out_and_returned_only_on_request(store: Store) -> None:
    secret = {"api_token": "tok-123", "nested": {"k": [1, 2]}}
    stored = await store.create_issuer(issuer(config={"url": "https://ca", "secret": secret}))
    assert dict(stored.config) == {"url": "https://ca"}
    assert await store.get_issuer("issuer-1") == stored
    assert dict(await store.issuer_secret("issuer-1")) == secret

    kept = await store.update_issuer(issuer(config={"url": "https://ca2"}))
    assert dict(kept.config) == {"url": "https://ca2"}
    assert dict(await store.issuer_secret("issuer-1")) == secret
    await store.update_issuer(issuer(config={"secret": {}}))
    assert dict(await store.issuer_secret("issuer-1")) == {}
    with pytest.raises(ValueError, match=r'Issuer.config\["secret"\] is a str'):
        await store.create_issuer(issuer("issuer-2", config={"secret": "plain"}))
    with pytest.raises(NotFound):
        await store.issuer_secret("issuer-9")

    await store.create_agent(agent(), KEY_HASH)
    await store.create_target(target(config={"path": "/etc/x", "secret": {"password": "pw"}}))
    assert dict((await store.get_target("target-1")).config) == {"path": "/etc/x"}
    assert dict(await store.target_secret("target-1")) == {"password": "pw"}


async def test_secret_needs_the_passphrase() -> None:
    store = MemoryStore(DOMAIN_RULES, encryption_key="")
    with pytest.raises(SealError, match="CERTCTL_CONFIG_ENCRYPTION_KEY"):
        await store.create_issuer(issuer(config={"secret": {"a": "b"}}))
    assert await store.list_issuers() == ()
    await store.create_issuer(issuer(config={"url": "no secret, no key needed"}))


# -- agents -----------------------------------------------------------------------------


async def test_agent_registration_and_heartbeats(store: Store) -> None:
    created = await store.create_agent(agent(last_heartbeat_at=None), KEY_HASH)
    assert await store.agent_by_key_hash(KEY_HASH) == created
    with pytest.raises(NotFound, match="no agent has this key"):
        await store.agent_by_key_hash(hashlib.sha256(b"other").hexdigest())
    with pytest.raises(ValueError, match="not a SHA-256 hex digest"):
        await store.agent_by_key_hash("agent-key-1")
    with pytest.raises(Conflict, match="key hash is already registered"):
        await store.create_agent(agent("agent-2"), KEY_HASH)

    beat = await store.record_heartbeat("agent-1", T0 + DAY, os="linux", version="")
    assert (beat.last_heartbeat_at, beat.os, beat.version) == (T0 + DAY, "linux", "")
    assert beat.hostname == created.hostname
    offline = await store.set_agent_status(
        "agent-1", AgentStatus.OFFLINE, seen_heartbeat_at=T0 + DAY
    )
    assert offline.status is AgentStatus.OFFLINE
    with pytest.raises(Conflict, match="sent a heartbeat since"):
        await store.set_agent_status("agent-1", AgentStatus.OFFLINE, seen_heartbeat_at=T0)
    back = await store.record_heartbeat("agent-1", T0 + 2 * DAY)
    assert back.status is AgentStatus.ONLINE
    with pytest.raises(NotFound):
        await store.record_heartbeat("agent-9", T0)


async def test_sightings_are_heartbeats_written_together(store: Store) -> None:
    await store.create_agent(agent(last_heartbeat_at=T0 + 2 * DAY), KEY_HASH)
    await store.create_agent(
        agent("agent-2", last_heartbeat_at=None), hashlib.sha256(b"2").hexdigest()
    )
    await store.create_agent(agent("agent-3"), hashlib.sha256(b"3").hexdigest())
    await store.set_agent_status("agent-2", AgentStatus.OFFLINE, seen_heartbeat_at=None)
    await store.retire_agent("agent-3", at=T0, reason="decommissioned")

    written = await store.record_seen(
        [
            Sighting("agent-1", T0 + DAY, hostname="moved.example.com"),  # older than stored
            Sighting("agent-2", T0 + DAY, version="2.0.0", os="linux"),
            Sighting("agent-3", T0 + DAY),  # retired: skipped
            Sighting("agent-9", T0 + DAY),  # unknown: skipped
        ]
    )

    assert written == 2
    first = await store.get_agent("agent-1")
    assert first.last_heartbeat_at == T0 + 2 * DAY  # a heartbeat time never moves back
    assert first.hostname == "moved.example.com"
    second = await store.get_agent("agent-2")
    assert (second.status, second.last_heartbeat_at) == (AgentStatus.ONLINE, T0 + DAY)
    assert (second.version, second.os, second.hostname) == ("2.0.0", "linux", "agent-2.example.com")
    assert (await store.get_agent("agent-3")).last_heartbeat_at != T0 + DAY
    assert await store.record_seen([]) == 0
    with pytest.raises(ValueError, match="name an agent twice"):
        await store.record_seen([Sighting("agent-1", T0), Sighting("agent-1", T0 + DAY)])


async def test_retirement_is_blocked_by_dependencies_unless_cascading(store: Store) -> None:
    await seed(store)
    await store.create_certificate(certificate(target_ids=("target-1",)))
    await store.create_jobs(
        [job("deploy", job_type=JobType.DEPLOYMENT, target_id="target-1", agent_id="agent-1")]
    )
    deps = await store.agent_dependencies("agent-1")
    assert (deps.targets, deps.certificates, deps.jobs) == (1, 1, 1)
    with pytest.raises(Conflict, match="1 targets, 1 certificates and 1 active jobs"):
        await store.retire_agent("agent-1", T0, "decommissioned")
    retired = await store.retire_agent("agent-1", T0 + DAY, "gone", cascade=True)
    assert (retired.retired_at, retired.retired_reason) == (T0 + DAY, "gone")
    assert (await store.get_target("target-1")).retired_at == T0 + DAY
    again = await store.retire_agent("agent-1", T0 + 2 * DAY, "twice")
    assert again == retired
    with pytest.raises(Conflict, match="is retired"):
        await store.record_heartbeat("agent-1", T0)
    with pytest.raises(Conflict, match="is retired"):
        await store.set_agent_status("agent-1", AgentStatus.ONLINE, seen_heartbeat_at=T0)
    with pytest.raises(NotFound):
        await store.agent_dependencies("agent-9")


# -- jobs -------------------------------------------------------------------------------


async def test_server_claims_never_take_agent_deployment_jobs(store: Store) -> None:
    await seed(store)
    await store.create_agent(agent("agent-2"), hashlib.sha256(b"2").hexdigest())
    await store.create_target(target("target-2", "agent-2"))
    await store.create_certificate(certificate())
    await store.create_jobs(
        [
            job("renew", now=T0),
            job("later", now=T0 + DAY),
            job("direct", job_type=JobType.DEPLOYMENT, target_id="target-2", agent_id="agent-1"),
            job("routed", job_type=JobType.DEPLOYMENT, target_id="target-1", now=T0),
            job("other", job_type=JobType.DEPLOYMENT, target_id="target-2", now=T0),
        ]
    )
    server = await store.claim_jobs(agent_id=None, now=T0, limit=10)
    assert [j.id for j in server] == ["renew"]
    assert server[0].status is JobStatus.RUNNING
    assert server[0].started_at == T0

    mine = await store.claim_jobs(agent_id="agent-1", now=T0, limit=10)
    assert sorted(j.id for j in mine) == ["direct", "routed"]
    assert all(j.agent_id == "agent-1" and j.status is JobStatus.RUNNING for j in mine)
    assert await store.claim_jobs(agent_id="agent-1", now=T0, limit=10) == ()
    assert [j.id for j in await store.claim_jobs(agent_id="agent-2", now=T0, limit=1)] == ["other"]
    assert await store.get_job("routed") == next(j for j in mine if j.id == "routed")


async def test_transition_is_compare_and_set(store: Store) -> None:
    await seed(store)
    await store.create_target(target("target-2"))
    await store.create_certificate(certificate(target_ids=("target-1", "target-2")))
    (pending,) = await store.create_jobs([job()])
    (running,) = await store.claim_jobs(agent_id=None, now=T0, limit=5)
    awaiting, _ = transition(running, CSRRequested(), T0 + DAY)
    assert await store.transition_job(running, awaiting, audit=[event("a-1")]) == awaiting
    # A writer that read the job before that change conflicts instead of overwriting it.
    with pytest.raises(Conflict, match="changed since it was read"):
        await store.transition_job(running, transition(running, Failure("x"), T0 + DAY)[0])
    with pytest.raises(Conflict):
        await store.transition_job(pending, running)
    with pytest.raises(ValueError, match="pass the transition of job"):
        await store.transition_job(awaiting, replace(awaiting, id="job-2"))
    assert await store.get_job("job-1") == awaiting
    assert [j.id for j in await store.awaiting_csr_jobs("agent-1")] == ["job-1"]
    assert await store.awaiting_csr_jobs("agent-9") == ()

    resumed, _ = transition(awaiting, CSRSubmitted(), T0 + 2 * DAY)
    await store.transition_job(awaiting, resumed)
    completed, _ = transition(resumed, Succeeded(), T0 + 3 * DAY)
    fanout = [
        job(f"deploy-{t}", job_type=JobType.DEPLOYMENT, target_id=t, now=T0 + 3 * DAY)
        for t in ("target-1", "target-2")
    ]
    await store.transition_job(resumed, completed, create=fanout)
    deployments = await store.list_jobs(JobQuery(types=frozenset({JobType.DEPLOYMENT})))
    assert deployments.items == tuple(fanout)

    (deploy,) = await store.claim_jobs(agent_id="agent-1", now=T0 + 3 * DAY, limit=1)
    finished, _ = transition(deploy, Succeeded(), T0 + 4 * DAY)
    await store.transition_job(deploy, finished, deployed_at=T0 + 4 * DAY)
    assert (await store.get_certificate("cert-1")).last_deployment_at == T0 + 4 * DAY


async def test_reaper_and_retry_queries(store: Store) -> None:
    await seed(store)
    await store.create_agent(agent("agent-2", last_heartbeat_at=None), "b" * 64)
    await store.create_certificate(certificate())
    await store.create_jobs(
        [
            job("csr", status=JobStatus.AWAITING_CSR, now=T0),
            job("approval", status=JobStatus.AWAITING_APPROVAL, now=T0),
            job("fresh", status=JobStatus.AWAITING_CSR, now=T0 + 2 * DAY),
            job("d1", job_type=JobType.DEPLOYMENT, target_id="target-1", agent_id="agent-1"),
            job("d2", job_type=JobType.DEPLOYMENT, target_id="target-1", agent_id="agent-2"),
            job("retry"),
        ]
    )
    timed_out = await store.timed_out_jobs(
        T0 + 2 * DAY, awaiting_csr=DAY, awaiting_approval=3 * DAY, limit=10
    )
    assert [j.id for j in timed_out] == ["csr"]

    await store.claim_jobs(agent_id="agent-1", now=T0, limit=5)
    await store.claim_jobs(agent_id="agent-2", now=T0, limit=5)
    await store.record_heartbeat("agent-1", T0 + DAY)
    lost = await store.jobs_on_lost_agents(T0 + DAY, offline_after=timedelta(minutes=5), limit=10)
    assert [(x.job.id, x.agent.id) for x in lost] == [("d2", "agent-2")]

    (running,) = await store.claim_jobs(agent_id=None, now=T0, limit=5)
    failed, _ = transition(running, Failure("issuer down"), T0)
    await store.transition_job(running, failed)
    assert failed.next_retry_at is not None
    assert await store.jobs_due_for_retry(failed.next_retry_at - DAY / 24, limit=5) == ()
    due = await store.jobs_due_for_retry(failed.next_retry_at, limit=5)
    assert due == (failed,)
    retried, _ = transition(failed, RetryDue(), failed.next_retry_at)
    assert (await store.transition_job(failed, retried)).status is JobStatus.PENDING


# -- revocation and audit ---------------------------------------------------------------


async def test_revocation(store: Store) -> None:
    await seed(store)
    await store.create_certificate(certificate())
    rev = Revocation(
        "rev-1", "cert-1", "01ab", RevocationReason.KEY_COMPROMISE, "alice", T0, "issuer-1"
    )
    cert = await store.revoke_certificate(rev, audit=[event()])
    assert cert.status is CertificateStatus.REVOKED
    assert (cert.revoked_at, cert.revocation_reason) == (T0, RevocationReason.KEY_COMPROMISE)
    with pytest.raises(Conflict, match="already revoked"):
        await store.revoke_certificate(replace(rev, id="rev-2"))
    assert await store.list_revocations(issuer_id="issuer-1") == (rev,)
    assert await store.list_revocations(issuer_id="issuer-2") == ()
    assert (await store.mark_issuer_notified("rev-1")).issuer_notified
    with pytest.raises(NotFound):
        await store.mark_issuer_notified("rev-9")
    with pytest.raises(NotFound):
        await store.revoke_certificate(replace(rev, id="rev-3", certificate_id="cert-9"))


async def test_audit_filters_and_pagination(store: Store) -> None:
    events = [
        event(
            f"audit-{i}",
            at=T0 + i * DAY,
            actor="bob" if i % 2 else "alice",
            actor_type=ActorType.AGENT if i == 3 else ActorType.USER,
            details={"i": i, "list": [1, "two"]},
        )
        for i in range(7)
    ]
    await store.append_audit(events)
    with pytest.raises(Conflict):
        await store.append_audit([events[0]])
    page = await store.list_audit(limit=4)
    rest = await store.list_audit(limit=4, cursor=page.next_cursor)
    assert page.items + rest.items == tuple(events)
    bob = await store.list_audit(AuditQuery(actor="bob"))
    assert [e.id for e in bob.items] == ["audit-1", "audit-3", "audit-5"]
    window = await store.list_audit(AuditQuery(since=T0 + DAY, until=T0 + 3 * DAY))
    assert [e.id for e in window.items] == ["audit-1", "audit-2"]
    agents = await store.list_audit(AuditQuery(actor_type=ActorType.AGENT))
    assert [e.id for e in agents.items] == ["audit-3"]


async def test_operations_are_safe_to_run_concurrently(store: Store) -> None:
    """Many tasks renewing one certificate at once still leave it on its newest version."""
    await seed(store)
    await store.create_certificate(certificate())
    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(
                store.add_version, version("cert-1", f"v{i}", not_before=T0 + i * DAY)
            )
    cert = await store.get_certificate("cert-1")
    assert cert.expires_at == version(not_before=T0 + 7 * DAY).not_after
    assert await store.ready() is None
