"""``/api/v1/jobs`` and ``/api/v1/audit``: what happened, and the operator's job actions."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_querystring

from certctl.core.model import Job
from certctl.server.routes.common import Answer, actor, answers, page
from certctl.server.schemas import AuditEventOut, AuditListQuery, JobListQuery, PageOf
from certctl.server.state import services
from certctl.services import audit, jobs

blueprint = Blueprint("jobs", __name__, url_prefix="/api/v1")


@blueprint.get("/jobs")
@answers(PageOf[Job])
@validate_querystring(JobListQuery)
async def list_jobs(query_args: JobListQuery) -> Answer:
    found = await jobs.list_jobs(
        services(),
        statuses=query_args.status,
        types=query_args.type,
        certificate_id=query_args.certificate_id,
        agent_id=query_args.agent_id,
        limit=query_args.limit,
        cursor=query_args.cursor,
    )
    return page(found), 200


@blueprint.get("/jobs/<job_id>")
@answers(Job, errors=(404,))
async def get_job(job_id: str) -> Answer:
    return await jobs.get_job(services(), job_id), 200


@blueprint.post("/jobs/<job_id>/cancel")
@answers(Job, errors=(404, 409))
async def cancel(job_id: str) -> Answer:
    return await jobs.cancel(services(), actor(), job_id), 200


@blueprint.post("/jobs/<job_id>/approve")
@answers(Job, errors=(404, 409))
async def approve(job_id: str) -> Answer:
    return await jobs.decide_approval(services(), actor(), job_id, approve=True), 200


@blueprint.post("/jobs/<job_id>/reject")
@answers(Job, errors=(404, 409))
async def reject(job_id: str) -> Answer:
    return await jobs.decide_approval(services(), actor(), job_id, approve=False), 200


@blueprint.get("/audit")
@answers(PageOf[AuditEventOut])
@validate_querystring(AuditListQuery)
async def list_audit(query_args: AuditListQuery) -> Answer:
    found = await audit.list_events(
        services(),
        actor=query_args.actor,
        action=query_args.action,
        resource_type=query_args.resource_type,
        resource_id=query_args.resource_id,
        since=query_args.since,
        until=query_args.until,
        limit=query_args.limit,
        cursor=query_args.cursor,
    )
    return page(found), 200
