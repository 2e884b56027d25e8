"""``/api/v1/agents``: the operator's view of agents, and the agent protocol itself
(docs/agent-protocol.md, messages in ``certctl.protocol``). Agent routes are authenticated
before the view runs, so ``calling_agent()`` is always the agent named in the path."""

from __future__ import annotations

from quart import Blueprint, request
from quart_schema import validate_querystring, validate_request

from certctl.core.model import Agent, Job
from certctl.protocol import (
    AgentIdentity,
    CertificateMaterial,
    CSRAnswer,
    CSRSubmission,
    HeartbeatAnswer,
    HostFacts,
    Registration,
    StatusReport,
    TargetList,
    Work,
    facts_from_headers,
)
from certctl.server.routes.common import Answer, actor, answers, calling_agent, liveness_only
from certctl.server.schemas import Items, RetireQuery, WorkQuery
from certctl.server.state import services, state
from certctl.services import agents
from certctl.services.errors import InvalidInput

blueprint = Blueprint("agents", __name__, url_prefix="/api/v1/agents")

# An agent route also answers 410 once its agent is retired.
AGENT = (404, 410)


@blueprint.get("")
@answers(Items[Agent])
async def list_agents() -> Answer:
    return {"items": await agents.list_agents(services())}, 200


@blueprint.get("/<agent_id>")
@answers(Agent, errors=(404,))
async def get_agent(agent_id: str) -> Answer:
    return await agents.get_agent(services(), agent_id), 200


@blueprint.delete("/<agent_id>")
@answers(Agent, errors=(404, 409))
@validate_querystring(RetireQuery)
async def retire(agent_id: str, query_args: RetireQuery) -> Answer:
    retired = await agents.retire(
        services(), actor(), agent_id, reason=query_args.reason, cascade=query_args.force
    )
    state().agent_keys.drop(agent_id)
    return retired, 200


# -- the agent protocol ---------------------------------------------------------------


@blueprint.post("/register")
@answers(AgentIdentity, 201, errors=(409,))
@validate_request(Registration)
async def register(data: Registration) -> Answer:
    agent, key = await agents.register(services(), data.name, data)
    return AgentIdentity(agent_id=agent.id, agent_key=key), 201


@blueprint.post("/<agent_id>/heartbeat")
@answers(HeartbeatAnswer, errors=AGENT)
@validate_request(HostFacts)
async def heartbeat(agent_id: str, data: HostFacts) -> Answer:
    liveness_only()
    return await agents.heartbeat(services(), calling_agent(), data), 200


@blueprint.get("/<agent_id>/work")
@answers(Work, errors=AGENT)
@validate_querystring(WorkQuery)
async def work(agent_id: str, query_args: WorkQuery) -> Answer:
    try:
        facts = facts_from_headers(request.headers.get)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    limit = state().settings.agent_poll_wait_max.total_seconds()
    items, granted = await agents.poll(
        services(),
        calling_agent(),
        wait=min(query_args.wait, int(limit)),
        facts=facts,
        resume=query_args.resume,
    )
    if not items:
        liveness_only()
    return Work(count=len(items), jobs=tuple(items), wait_seconds=int(granted)), 200


@blueprint.post("/<agent_id>/csr")
@answers(CSRAnswer, errors=(*AGENT, 409, 422))
@validate_request(CSRSubmission)
async def csr(agent_id: str, data: CSRSubmission) -> Answer:
    answer = await agents.answer_csr(services(), calling_agent(), data.job_id, data.csr_pem)
    return answer, 200


@blueprint.get("/<agent_id>/certificates/<cert_id>")
@answers(CertificateMaterial, errors=AGENT)
async def certificate(agent_id: str, cert_id: str) -> Answer:
    return await agents.certificate(services(), calling_agent(), cert_id), 200


@blueprint.get("/<agent_id>/jobs/<job_id>")
@answers(Job, errors=AGENT)
async def job(agent_id: str, job_id: str) -> Answer:
    return await agents.job_of(services(), calling_agent(), job_id), 200


@blueprint.post("/<agent_id>/jobs/<job_id>/status")
@answers(Job, errors=(*AGENT, 409))
@validate_request(StatusReport)
async def status(agent_id: str, job_id: str, data: StatusReport) -> Answer:
    reported = await agents.report(
        services(),
        calling_agent(),
        job_id,
        completed=data.status == "Completed",
        error=data.error,
        verification=data.verification,
    )
    return reported, 200


@blueprint.get("/<agent_id>/targets")
@answers(TargetList, errors=AGENT)
async def targets(agent_id: str) -> Answer:
    return TargetList(targets=tuple(await agents.targets(services(), calling_agent()))), 200
