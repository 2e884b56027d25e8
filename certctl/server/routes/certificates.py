"""``/api/v1/certificates``: inventory, lifecycle actions and PEM export (never keys)."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_querystring, validate_request

from certctl.core.model import CertificateVersion, ManagedCertificate
from certctl.server.routes.common import Answer, actor, answers, page
from certctl.server.schemas import (
    CertificateCreate,
    CertificateCreated,
    CertificateListQuery,
    CertificateUpdate,
    Deploy,
    Items,
    JobId,
    JobIds,
    PageOf,
    Renew,
    Revoke,
)
from certctl.server.state import services
from certctl.services import certificates, revocation
from certctl.services.certificates import CertificateInput

blueprint = Blueprint("certificates", __name__, url_prefix="/api/v1/certificates")


def _input(data: CertificateCreate | CertificateUpdate) -> CertificateInput:
    return CertificateInput(**data.model_dump(exclude_unset=isinstance(data, CertificateUpdate)))


@blueprint.post("")
@answers(CertificateCreated, 201, errors=(404, 409))
@validate_request(CertificateCreate)
async def create(data: CertificateCreate) -> Answer:
    cert, jobs = await certificates.create(services(), actor(), _input(data))
    return {"certificate": cert, "job_ids": jobs}, 201


@blueprint.get("")
@answers(PageOf[ManagedCertificate])
@validate_querystring(CertificateListQuery)
async def list_(query_args: CertificateListQuery) -> Answer:
    found = await certificates.list_certificates(
        services(),
        statuses=query_args.status,
        owner_id=query_args.owner_id,
        team_id=query_args.team_id,
        environment=query_args.environment,
        issuer_id=query_args.issuer_id,
        expiring_before=query_args.expiring_before,
        limit=query_args.limit,
        cursor=query_args.cursor,
    )
    return page(found), 200


@blueprint.get("/<cert_id>")
@answers(ManagedCertificate, errors=(404,))
async def get(cert_id: str) -> Answer:
    return await certificates.get_certificate(services(), cert_id), 200


@blueprint.put("/<cert_id>")
@answers(ManagedCertificate, errors=(404, 409))
@validate_request(CertificateUpdate)
async def update(cert_id: str, data: CertificateUpdate) -> Answer:
    return await certificates.update(services(), actor(), cert_id, _input(data)), 200


@blueprint.delete("/<cert_id>")
@answers(ManagedCertificate, errors=(404, 409))
async def archive(cert_id: str) -> Answer:
    return await certificates.archive(services(), actor(), cert_id), 200


@blueprint.get("/<cert_id>/versions")
@answers(Items[CertificateVersion], errors=(404,))
async def versions(cert_id: str) -> Answer:
    return {"items": await certificates.list_versions(services(), cert_id)}, 200


@blueprint.post("/<cert_id>/renew")
@answers(JobId, 202, errors=(404, 409))
@validate_request(Renew)
async def renew(cert_id: str, data: Renew) -> Answer:
    job_id = await certificates.renew(services(), actor(), cert_id, force=data.force)
    return {"job_id": job_id}, 202


@blueprint.post("/<cert_id>/deploy")
@answers(JobIds, 202, errors=(404, 409))
@validate_request(Deploy)
async def deploy(cert_id: str, data: Deploy) -> Answer:
    jobs = await certificates.deploy(services(), actor(), cert_id, target_id=data.target_id)
    return {"job_ids": jobs}, 202


@blueprint.post("/<cert_id>/revoke")
@answers(ManagedCertificate, errors=(404, 409))
@validate_request(Revoke)
async def revoke(cert_id: str, data: Revoke) -> Answer:
    return await revocation.revoke(services(), actor(), cert_id, data.reason), 200


@blueprint.get("/<cert_id>/export/pem")
@answers(certificates.PemExport, errors=(404,))
async def export_pem(cert_id: str) -> Answer:
    return await certificates.export_pem(services(), cert_id), 200
