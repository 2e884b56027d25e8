"""Configuration resources with the same routes each: list, create, get, replace and
(except targets) delete. One ``Resource`` row per kind names its schemas and its service
functions, so the routes of the six kinds cannot drift apart (validation, audit, status
codes); ids, entities and audit events are the services' business."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_request

from certctl.core.model import CertificateProfile, Owner, RenewalPolicy, Team
from certctl.server.routes.common import Answer, actor, answers
from certctl.server.schemas import (
    Deleted,
    IssuerIn,
    IssuerOut,
    Items,
    OwnerIn,
    PolicyIn,
    ProfileIn,
    TargetIn,
    TargetOut,
    TargetUpdate,
    TeamIn,
)
from certctl.server.state import services
from certctl.services import inventory as inv

blueprint = Blueprint("inventory", __name__, url_prefix="/api/v1")


@dataclass(frozen=True, slots=True)
class Resource:
    """One kind: its path, schemas, how a body becomes the service's input, and the
    service's use cases (``delete`` is ``None`` for kinds that are never deleted)."""

    path: str
    shown_as: Any
    create_model: type[BaseModel]
    update_model: type[BaseModel]
    create_input: Callable[[Any], Any]
    update_input: Callable[[Any], Any]
    list_: Callable[..., Awaitable[Sequence[Any]]]
    create: Callable[..., Awaitable[Any]]
    get: Callable[..., Awaitable[Any]]
    update: Callable[..., Awaitable[Any]]
    delete: Callable[..., Awaitable[None]] | None


def _fields(cls: Callable[..., Any]) -> Callable[[BaseModel], Any]:
    """The service input from a parsed body, field for field (nested models kept)."""
    return lambda data: cls(**dict(data))


def _changes(data: BaseModel) -> inv.TargetChanges:
    return inv.TargetChanges(**data.model_dump(exclude_unset=True))


RESOURCES: Sequence[Resource] = (
    Resource(
        "teams", Team, TeamIn, TeamIn, _fields(inv.TeamInput), _fields(inv.TeamInput),
        inv.list_teams, inv.create_team, inv.get_team, inv.update_team, inv.delete_team,
    ),
    Resource(
        "owners", Owner, OwnerIn, OwnerIn, _fields(inv.OwnerInput), _fields(inv.OwnerInput),
        inv.list_owners, inv.create_owner, inv.get_owner, inv.update_owner, inv.delete_owner,
    ),
    Resource(
        "renewal-policies", RenewalPolicy, PolicyIn, PolicyIn,
        _fields(inv.PolicyInput), _fields(inv.PolicyInput),
        inv.list_policies, inv.create_policy, inv.get_policy, inv.update_policy,
        inv.delete_policy,
    ),
    Resource(
        "profiles", CertificateProfile, ProfileIn, ProfileIn,
        _fields(inv.ProfileInput), _fields(inv.ProfileInput),
        inv.list_profiles, inv.create_profile, inv.get_profile, inv.update_profile,
        inv.delete_profile,
    ),
    Resource(
        "issuers", IssuerOut, IssuerIn, IssuerIn,
        _fields(inv.IssuerInput), _fields(inv.IssuerInput),
        inv.list_issuers, inv.create_issuer, inv.get_issuer, inv.update_issuer,
        inv.delete_issuer,
    ),
    Resource(
        "targets", TargetOut, TargetIn, TargetUpdate, _fields(inv.TargetInput), _changes,
        inv.list_targets, inv.create_target, inv.get_target, inv.update_target, None,
    ),
)  # fmt: skip


def _register(resource: Resource) -> None:
    base = f"/{resource.path}"
    endpoint = resource.path.replace("-", "_")

    @answers(Items[resource.shown_as])  # type: ignore[name-defined]
    async def list_all() -> Answer:
        return {"items": await resource.list_(services())}, 200

    @answers(resource.shown_as, 201, errors=(404, 409))
    async def create(data: BaseModel) -> Answer:
        return await resource.create(services(), actor(), resource.create_input(data)), 201

    @answers(resource.shown_as, errors=(404,))
    async def get(entity_id: str) -> Answer:
        return await resource.get(services(), entity_id), 200

    @answers(resource.shown_as, errors=(404, 409))
    async def update(entity_id: str, data: BaseModel) -> Answer:
        changed = await resource.update(services(), actor(), entity_id, resource.update_input(data))
        return changed, 200

    blueprint.add_url_rule(base, f"list_{endpoint}", list_all, methods=["GET"])
    blueprint.add_url_rule(
        base, f"create_{endpoint}", validate_request(resource.create_model)(create),
        methods=["POST"],
    )  # fmt: skip
    blueprint.add_url_rule(f"{base}/<entity_id>", f"get_{endpoint}", get, methods=["GET"])
    blueprint.add_url_rule(
        f"{base}/<entity_id>",
        f"update_{endpoint}",
        validate_request(resource.update_model)(update),
        methods=["PUT"],
    )
    if resource.delete is not None:
        remove = resource.delete

        @answers(Deleted, errors=(404, 409))
        async def delete(entity_id: str) -> Answer:
            await remove(services(), actor(), entity_id)
            return {"deleted": entity_id}, 200

        blueprint.add_url_rule(
            f"{base}/<entity_id>", f"delete_{endpoint}", delete, methods=["DELETE"]
        )


for _resource in RESOURCES:
    _register(_resource)
