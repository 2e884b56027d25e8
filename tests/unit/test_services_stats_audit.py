"""certctl.services.stats (inventory summary, gauges), certctl.services.audit (redaction)
and certctl.services.inventory (defaults, target checks)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_services_support import OPERATOR, ServiceEnv

from certctl.core.model import ActorType, IssuerType, Target, TargetType
from certctl.services import agents, audit, inventory, metrics, stats
from certctl.services.context import SYSTEM
from certctl.services.errors import InvalidInput
from certctl.store.base import AuditQuery

PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n-----END PRIVATE KEY-----\n"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
async def env(tmp_path: Path) -> ServiceEnv:
    return await ServiceEnv.build(tmp_path)


# -- stats -------------------------------------------------------------------------------


async def test_summary_counts_certificates_agents_and_jobs(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1", "target-2")
    await env.agent("web-02", "target-3")
    retired = await env.agent("web-03")
    await agents.retire(env.services, OPERATOR, retired.agent.id, reason="", cascade=False)
    issued_id, _ = await env.certificate("target-1", "target-2")
    await env.issue(web, issued_id)  # Issuance Completed, two Deployments Pending
    await env.certificate("target-3", common_name="b.example.com", sans=())  # AwaitingCSR
    await env.certificate(common_name="c.example.com", sans=())  # no target, no job

    summary = await stats.summary(env.services)

    assert summary.total_certificates == 3
    assert summary.certificates_by_status == {"Active": 1, "Pending": 2}
    assert summary.expiring_within_30_days == 0
    assert (summary.total_agents, summary.online_agents, summary.offline_agents) == (2, 2, 0)
    assert summary.retired_agents == 1
    assert summary.active_jobs == 3
    assert summary.completed_jobs == 1
    assert summary.failed_jobs == 0
    assert summary.jobs_by_type_and_status == {
        "Issuance": {"Completed": 1, "AwaitingCSR": 1},
        "Deployment": {"Pending": 2},
    }
    assert metrics.CERTIFICATES.labels("Pending")._value.get() == 2
    assert metrics.JOBS.labels("Deployment", "Pending")._value.get() == 2
    assert metrics.AGENTS.labels("Online")._value.get() == 2

    # two months on: the issued certificate expires within 30 days, the agents went quiet,
    # and a deployment failed.
    env.clock.advance(timedelta(days=61))
    await agents.update_liveness(env.services)
    (item, _) = await agents.work(env.services, web.agent)
    await agents.report(
        env.services, web.agent, item.job_id, completed=False, error="x", verification=None
    )

    summary = await stats.summary(env.services)

    assert summary.expiring_within_30_days == 1
    assert (summary.online_agents, summary.offline_agents) == (0, 2)
    assert summary.failed_jobs == 1
    assert summary.active_jobs == 2  # one Running deployment, one AwaitingCSR issuance
    assert summary.jobs_by_type_and_status["Deployment"] == {"Failed": 1, "Running": 1}
    assert metrics.AGENTS.labels("Offline")._value.get() == 2


# -- audit redaction -------------------------------------------------------------------------


def test_redaction_replaces_credentials_and_private_keys_at_any_depth() -> None:
    details = {
        "password": "hunter2",
        "Private_Key": "anything",
        "db_password": "pw",
        "api_token": "t",
        "client_secret": "s",
        "Authorization": "Bearer abc",
        "body": PEM_KEY,
        "chain": PEM_CERT,
        "config": {
            "cert_path": "/etc/ssl/x.pem",
            "secret": {"token": "t"},
            "hooks": [{"passphrase": "p"}, {"material": "x" + PEM_KEY}],
        },
        "count": 3,
        "ok": True,
        "none": None,
    }

    redacted = audit.redact_mapping(details)

    assert redacted == {
        "password": audit.REDACTED,
        "Private_Key": audit.REDACTED,
        "db_password": audit.REDACTED,
        "api_token": audit.REDACTED,
        "client_secret": audit.REDACTED,
        "Authorization": audit.REDACTED,
        "body": audit.REDACTED,
        "chain": PEM_CERT,
        "config": {
            "cert_path": "/etc/ssl/x.pem",
            "secret": audit.REDACTED,
            "hooks": [{"passphrase": audit.REDACTED}, {"material": audit.REDACTED}],
        },
        "count": 3,
        "ok": True,
        "none": None,
    }
    assert details["password"] == "hunter2"  # the caller's mapping is left alone


@pytest.mark.parametrize(
    "pem",
    [
        PEM_KEY,
        PEM_KEY.replace("PRIVATE KEY", "EC PRIVATE KEY"),
        PEM_KEY.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
        PEM_KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
    ],
)
def test_every_pem_private_key_kind_is_redacted(pem: str) -> None:
    assert audit.redact(pem) == audit.REDACTED
    assert audit.redact([pem, "plain"]) == [audit.REDACTED, "plain"]


async def test_stored_audit_events_never_hold_credentials(env: ServiceEnv) -> None:
    event = audit.event(
        env.services,
        OPERATOR,
        "issuer_updated",
        "issuer",
        "issuer-1",
        details={"config": {"password": "pw", "key_pem": PEM_KEY}, "name": "ca"},
    )
    await env.store.append_audit([event])

    (stored,) = (await env.store.list_audit(AuditQuery(action="issuer_updated"))).items

    assert stored.details == {
        "config": {"password": audit.REDACTED, "key_pem": audit.REDACTED},
        "name": "ca",
    }
    assert (stored.actor, stored.actor_type) == ("alice", ActorType.USER)
    assert stored.timestamp == env.clock.now()
    assert "pw" not in repr(stored)


async def test_job_events_record_the_transition_and_actor(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1")
    cert_id, (job_id,) = await env.certificate("target-1")
    await env.issue(web, cert_id)

    events = (await env.store.list_audit(AuditQuery(resource_id=job_id), limit=100)).items

    # (same timestamp: the clock did not move during the call, so compare as a set)
    assert {(e.action, e.details["from"], e.details["to"]) for e in events} == {
        ("csr_submitted", "AwaitingCSR", "Running"),
        ("job_completed", "Running", "Completed"),
    }
    assert len(events) == 2
    assert all(e.actor_type is ActorType.AGENT and e.actor == "web-01" for e in events)
    assert all(e.details["certificate_id"] == cert_id for e in events)


# -- inventory -------------------------------------------------------------------------------


async def test_ensure_defaults_is_idempotent(env: ServiceEnv) -> None:
    await inventory.ensure_defaults(env.services, issuer_config={"common_name": "Test CA"})
    await inventory.ensure_defaults(env.services, issuer_config={"common_name": "Other"})

    issuer = await env.store.get_issuer(inventory.DEFAULT_ISSUER_ID)
    assert (issuer.type, issuer.config) == (IssuerType.LOCAL_CA, {"common_name": "Test CA"})
    assert (await env.store.get_policy(inventory.DEFAULT_POLICY_ID)).auto_renew is True
    seeded = (await env.store.list_audit(AuditQuery(action="seeded"))).items
    assert sorted(e.resource_id for e in seeded) == sorted(
        [inventory.DEFAULT_ISSUER_ID, inventory.DEFAULT_POLICY_ID]
    )
    assert {e.actor for e in seeded} == {SYSTEM.name}


async def test_target_checks_name_the_bad_field(env: ServiceEnv) -> None:
    web = await env.agent("web-01")
    config = {
        "cert_path": "/etc/nginx/ssl/cert.pem",
        "key_path": "/etc/nginx/ssl/key.pem",
        "reload_command": "nginx -s reload",
        "validate_command": "nginx -t",
        "secret": {"token": "x"},  # not part of the connector schema: checked separately
    }
    good = Target("t-1", "web", TargetType.NGINX, web.agent.id, config)
    inventory.check_target_config(good)
    await inventory.check_target_agent(env.services, good)

    missing = {k: v for k, v in config.items() if k != "cert_path"}
    with pytest.raises(InvalidInput) as raised:
        inventory.check_target_config(Target("t-2", "web", TargetType.NGINX, web.agent.id, missing))
    assert raised.value.field == "config"
    assert "cert_path" in raised.value.message
    with pytest.raises(InvalidInput) as raised:
        await inventory.check_target_agent(
            env.services, Target("t-3", "web", TargetType.NGINX, "agent-missing")
        )
    assert raised.value.field == "agent_id"

    await agents.retire(env.services, OPERATOR, web.agent.id, reason="", cascade=False)
    with pytest.raises(InvalidInput):
        await inventory.check_target_agent(env.services, good)
