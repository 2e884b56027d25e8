"""Probes, CRLs, metrics and the summary: the routes operators' tooling polls."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, request
from quart.wrappers import Response
from werkzeug.http import unquote_etag

from certctl.server.errors import error_response
from certctl.server.metrics import HTTP_REGISTRY
from certctl.server.routes.common import AUTHENTICATED, Answer, actor, answers, document
from certctl.server.schemas import AuthCheck, CRLDocument, PrometheusText, Readiness, Status
from certctl.server.state import services, state
from certctl.services import revocation, stats
from certctl.services.metrics import REGISTRY
from certctl.services.stats import Summary

blueprint = Blueprint("system", __name__)


@blueprint.get("/health")
@answers(Status, errors=(400,), public=True)
async def health() -> Answer:
    return {"status": "healthy"}, 200


@blueprint.get("/ready")
@answers(Readiness, errors=(400, 503), public=True)
async def ready() -> Answer | Response:
    """200 only while the database answers, no background loop has been failing for
    longer than its bound, and the audit buffer takes events."""
    problem = await stats.database_problem(services())
    if problem is not None:
        return error_response(503, problem, code="not_ready")
    server = state()
    failing = server.supervisor.unhealthy()
    if failing:
        return error_response(
            503,
            f"background loops are failing: {', '.join(failing)}; the log has each failure "
            "as 'background step failed' with its loop.",
            code="not_ready",
        )
    if not server.audit.accepting:
        return error_response(
            503, "the audit buffer is full; audit rows are not being written.", code="not_ready"
        )
    return {"status": "ready", "database": "reachable"}, 200


@blueprint.get("/.well-known/pki/crl/<issuer_id>")
@document(CRLDocument, errors=(400, 404))
@document(CRLDocument, 304)
async def crl(issuer_id: str) -> Response:
    current = await revocation.crl(services(), issuer_id)
    # ``if_none_match`` holds unquoted tags, and If-None-Match compares weakly.
    if request.if_none_match.contains_weak(unquote_etag(current.etag)[0]):
        response = Response(b"", status=304)
    else:
        response = Response(current.der, content_type="application/pkix-crl")
    response.headers["ETag"] = current.etag
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@blueprint.get("/metrics")
@document(PrometheusText, errors=AUTHENTICATED)
async def metrics() -> Response:
    await stats.summary(services())
    body = generate_latest(REGISTRY) + generate_latest(HTTP_REGISTRY)
    return Response(body, content_type=CONTENT_TYPE_LATEST)


@blueprint.get("/api/v1/stats/summary")
@answers(Summary)
async def summary() -> Answer:
    return await stats.summary(services()), 200


@blueprint.get("/api/v1/auth/check")
@answers(AuthCheck)
async def auth_check() -> Answer:
    who = actor()
    return {"status": "authenticated", "user": who.name, "role": who.role}, 200
