"""``/api/v1/certificates``: inventory, lifecycle actions and PEM export (never keys)."""

from __future__ import annotations

from quart import Blueprint
from quart.wrappers import Response
from quart_schema import validate_querystring, validate_request

from certctl.server.routes.common import actor, page, reply
from certctl.server.schemas import (
    CertificateCreate,
    CertificateListQuery,
    CertificateUpdate,
    Deploy,
    Renew,
    Revoke,
)
from certctl.server.state import services
from certctl.services import certificates, revocation
from certctl.services.certificates import CertificateInput, split_chain
from certctl.store.base import CertificateQuery

blueprint = Blueprint("certificates", __name__, url_prefix="/api/v1/certificates")
Reply = tuple[Response, int]


def _input(data: CertificateCreate | CertificateUpdate) -> CertificateInput:
    return CertificateInput(**data.model_dump(exclude_unset=isinstance(data, CertificateUpdate)))


@blueprint.post("")
@validate_request(CertificateCreate)
async def create(data: CertificateCreate) -> Reply:
    cert, jobs = await certificates.create(services(), actor(), _input(data))
    return reply({"certificate": cert, "job_ids": jobs}, 201)


@blueprint.get("")
@validate_querystring(CertificateListQuery)
async def list_(query_args: CertificateListQuery) -> Reply:
    query = CertificateQuery(
        statuses=frozenset(query_args.status) if query_args.status else None,
        owner_id=query_args.owner_id,
        team_id=query_args.team_id,
        environment=query_args.environment,
        issuer_id=query_args.issuer_id,
        expiring_before=query_args.expiring_before,
    )
    return page(
        await services().store.list_certificates(
            query, limit=query_args.limit, cursor=query_args.cursor
        )
    )


@blueprint.get("/<cert_id>")
async def get(cert_id: str) -> Reply:
    return reply(await services().store.get_certificate(cert_id))


@blueprint.put("/<cert_id>")
@validate_request(CertificateUpdate)
async def update(cert_id: str, data: CertificateUpdate) -> Reply:
    return reply(await certificates.update(services(), actor(), cert_id, _input(data)))


@blueprint.delete("/<cert_id>")
async def archive(cert_id: str) -> Reply:
    return reply(await certificates.archive(services(), actor(), cert_id))


@blueprint.get("/<cert_id>/versions")
async def versions(cert_id: str) -> Reply:
    await services().store.get_certificate(cert_id)
    return reply({"items": await services().store.list_versions(cert_id)})


@blueprint.post("/<cert_id>/renew")
@validate_request(Renew)
async def renew(cert_id: str, data: Renew) -> Reply:
    job_id = await certificates.renew(services(), actor(), cert_id, force=data.force)
    return reply({"job_id": job_id}, 202)


@blueprint.post("/<cert_id>/deploy")
@validate_request(Deploy)
async def deploy(cert_id: str, data: Deploy) -> Reply:
    jobs = await certificates.deploy(services(), actor(), cert_id, target_id=data.target_id)
    return reply({"job_ids": jobs}, 202)


@blueprint.post("/<cert_id>/revoke")
@validate_request(Revoke)
async def revoke(cert_id: str, data: Revoke) -> Reply:
    return reply(await revocation.revoke(services(), actor(), cert_id, data.reason))


@blueprint.get("/<cert_id>/export/pem")
async def export_pem(cert_id: str) -> Reply:
    latest = await certificates.newest_version(services(), cert_id)
    leaf, chain = split_chain(latest.pem_chain)
    return reply(
        {
            "certificate_id": cert_id,
            "version_id": latest.id,
            "cert_pem": leaf,
            "chain_pem": chain,
            "full_pem": latest.pem_chain,
        }
    )
