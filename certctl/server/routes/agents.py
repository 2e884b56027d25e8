"""``/api/v1/agents``: the operator's view of agents, and the agent protocol itself
(see docs/agent-protocol.md). Agent routes are authenticated before the view runs, so
``calling_agent()`` is always the agent named in the path."""

from __future__ import annotations

from quart import Blueprint
from quart.wrappers import Response
from quart_schema import validate_querystring, validate_request

from certctl.core.model import Job
from certctl.server.routes.common import actor, calling_agent, reply
from certctl.server.schemas import (
    AgentRegister,
    CSRSubmit,
    Heartbeat,
    RetireQuery,
    StatusReport,
    WorkQuery,
)
from certctl.server.state import services, state
from certctl.services import agents
from certctl.services.agents import AgentInfo, Verification, WorkItem
from certctl.services.certificates import split_chain

blueprint = Blueprint("agents", __name__, url_prefix="/api/v1/agents")
Reply = tuple[Response, int]


@blueprint.get("")
async def list_agents() -> Reply:
    return reply({"items": await services().store.list_agents()})


@blueprint.get("/<agent_id>")
async def get_agent(agent_id: str) -> Reply:
    return reply(await services().store.get_agent(agent_id))


@blueprint.delete("/<agent_id>")
@validate_querystring(RetireQuery)
async def retire(agent_id: str, query_args: RetireQuery) -> Reply:
    retired = await agents.retire(
        services(), actor(), agent_id, reason=query_args.reason, cascade=query_args.force
    )
    state().agent_keys.drop(agent_id)
    return reply(retired)


# -- the agent protocol ---------------------------------------------------------------


@blueprint.post("/register")
@validate_request(AgentRegister)
async def register(data: AgentRegister) -> Reply:
    info = AgentInfo(data.hostname, data.os, data.architecture, data.ip_address, data.version)
    agent, key = await agents.register(services(), data.name, info)
    return reply({"agent_id": agent.id, "agent_key": key}, 201)


@blueprint.post("/<agent_id>/heartbeat")
@validate_request(Heartbeat)
async def heartbeat(agent_id: str, data: Heartbeat) -> Reply:
    info = AgentInfo(data.hostname, data.os, data.architecture, data.ip_address, data.version)
    agent = await agents.heartbeat(services(), calling_agent(), info)
    return reply({"status": agent.status, "server_time": services().now()})


@blueprint.get("/<agent_id>/work")
@validate_querystring(WorkQuery)
async def work(agent_id: str, query_args: WorkQuery) -> Reply:
    items = await agents.work(services(), calling_agent(), resume=query_args.resume)
    return reply({"count": len(items), "jobs": [_work_item(i) for i in items]})


def _work_item(item: WorkItem) -> dict[str, object]:
    target = item.target
    return {
        "job_id": item.job.id,
        "type": item.job.type,
        "status": item.job.status,
        "certificate_id": item.certificate.id,
        "common_name": item.certificate.common_name,
        "sans": item.certificate.sans,
        "key_algorithm": item.key_algorithm,
        "key_size": item.key_size,
        "target": None
        if target is None
        else {
            "id": target.id,
            "name": target.name,
            "type": target.type,
            "config": item.target_config,
        },
    }


@blueprint.post("/<agent_id>/csr")
@validate_request(CSRSubmit)
async def csr(agent_id: str, data: CSRSubmit) -> Reply:
    job, version = await agents.submit_csr(services(), calling_agent(), data.job_id, data.csr_pem)
    return reply(
        {
            "job_id": job.id,
            "status": job.status,
            "version": {
                "id": version.id,
                "serial_number": version.serial_number,
                "fingerprint_sha256": version.fingerprint_sha256,
                "not_before": version.not_before,
                "not_after": version.not_after,
            },
        }
    )


@blueprint.get("/<agent_id>/certificates/<cert_id>")
async def certificate(agent_id: str, cert_id: str) -> Reply:
    cert, latest = await agents.certificate(services(), calling_agent(), cert_id)
    leaf, chain = split_chain(latest.pem_chain)
    return reply(
        {
            "certificate_id": cert.id,
            "version_id": latest.id,
            "serial_number": latest.serial_number,
            "fingerprint_sha256": latest.fingerprint_sha256,
            "not_after": latest.not_after,
            "cert_pem": leaf,
            "chain_pem": chain,
        }
    )


@blueprint.get("/<agent_id>/jobs/<job_id>")
async def job(agent_id: str, job_id: str) -> Reply:
    found: Job = await agents.job_of(services(), calling_agent(), job_id)
    return reply(found)


@blueprint.post("/<agent_id>/jobs/<job_id>/status")
@validate_request(StatusReport)
async def status(agent_id: str, job_id: str, data: StatusReport) -> Reply:
    verification = None
    if data.verification is not None:
        verification = Verification(
            data.verification.status, data.verification.fingerprint, data.verification.error
        )
    reported = await agents.report(
        services(),
        calling_agent(),
        job_id,
        completed=data.status == "Completed",
        error=data.error,
        verification=verification,
    )
    return reply(reported)


@blueprint.get("/<agent_id>/targets")
async def targets(agent_id: str) -> Reply:
    found = await agents.targets(services(), calling_agent())
    return reply(
        {"targets": [{"id": t.id, "name": t.name, "type": t.type, "config": c} for t, c in found]}
    )
