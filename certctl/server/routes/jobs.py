"""``/api/v1/jobs`` and ``/api/v1/audit``: what happened, and the operator's job actions."""

from __future__ import annotations

from quart import Blueprint
from quart.wrappers import Response
from quart_schema import validate_querystring

from certctl.server.routes.common import actor, page, reply
from certctl.server.schemas import AuditListQuery, JobListQuery
from certctl.server.state import services
from certctl.services import jobs
from certctl.store.base import AuditQuery, JobQuery

blueprint = Blueprint("jobs", __name__, url_prefix="/api/v1")
Reply = tuple[Response, int]


@blueprint.get("/jobs")
@validate_querystring(JobListQuery)
async def list_jobs(query_args: JobListQuery) -> Reply:
    query = JobQuery(
        statuses=frozenset(query_args.status) if query_args.status else None,
        types=frozenset(query_args.type) if query_args.type else None,
        certificate_id=query_args.certificate_id,
        agent_id=query_args.agent_id,
    )
    return page(
        await services().store.list_jobs(query, limit=query_args.limit, cursor=query_args.cursor)
    )


@blueprint.get("/jobs/<job_id>")
async def get_job(job_id: str) -> Reply:
    return reply(await services().store.get_job(job_id))


@blueprint.post("/jobs/<job_id>/cancel")
async def cancel(job_id: str) -> Reply:
    return reply(await jobs.cancel(services(), actor(), job_id))


@blueprint.post("/jobs/<job_id>/approve")
async def approve(job_id: str) -> Reply:
    return reply(await jobs.decide_approval(services(), actor(), job_id, approve=True))


@blueprint.post("/jobs/<job_id>/reject")
async def reject(job_id: str) -> Reply:
    return reply(await jobs.decide_approval(services(), actor(), job_id, approve=False))


@blueprint.get("/audit")
@validate_querystring(AuditListQuery)
async def list_audit(query_args: AuditListQuery) -> Reply:
    query = AuditQuery(
        actor=query_args.actor,
        action=query_args.action,
        resource_type=query_args.resource_type,
        resource_id=query_args.resource_id,
        since=query_args.since,
        until=query_args.until,
    )
    return page(
        await services().store.list_audit(query, limit=query_args.limit, cursor=query_args.cursor)
    )
