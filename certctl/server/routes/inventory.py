"""Configuration resources with the same routes each: list, create, get, replace and
(except targets) delete. One ``Resource`` row per kind names its schemas and its service
functions, so the routes of the six kinds cannot drift apart (validation, audit, status
codes); ids, entities and audit events are the services' business."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    service's description of the kind (which owns every use case)."""

    path: str
    shown_as: Any
    create_model: type[BaseModel]
    update_model: type[BaseModel]
    create_input: Callable[[Any], Any]
    update_input: Callable[[Any], Any]
    kind: inv.Kind[Any, Any, Any]


def _fields(cls: Callable[..., Any]) -> Callable[[BaseModel], Any]:
    """The service input from a parsed body, field for field (nested models kept)."""
    return lambda data: cls(**dict(data))


def _changes(data: BaseModel) -> inv.TargetChanges:
    return inv.TargetChanges(**data.model_dump(exclude_unset=True))


_Bodies = tuple[type[BaseModel], type[BaseModel], Callable[[Any], Any], Callable[[Any], Any]]


def _same(model: type[BaseModel], cls: Callable[..., Any]) -> _Bodies:
    """The schemas and inputs of a kind whose create and replace bodies are the same."""
    return model, model, _fields(cls), _fields(cls)


RESOURCES: Sequence[Resource] = (
    Resource("teams", Team, *_same(TeamIn, inv.TeamInput), inv.TEAMS),
    Resource("owners", Owner, *_same(OwnerIn, inv.OwnerInput), inv.OWNERS),
    Resource("renewal-policies", RenewalPolicy, *_same(PolicyIn, inv.PolicyInput), inv.POLICIES),
    Resource("profiles", CertificateProfile, *_same(ProfileIn, inv.ProfileInput), inv.PROFILES),
    Resource("issuers", IssuerOut, *_same(IssuerIn, inv.IssuerInput), inv.ISSUERS),
    Resource(
        "targets", TargetOut, TargetIn, TargetUpdate, _fields(inv.TargetInput), _changes,
        inv.TARGETS,
    ),
)  # fmt: skip


def _register(resource: Resource) -> None:
    base = f"/{resource.path}"
    endpoint = resource.path.replace("-", "_")

    @answers(Items[resource.shown_as])  # type: ignore[name-defined]
    async def list_all() -> Answer:
        return {"items": await resource.kind.list(services())}, 200

    @answers(resource.shown_as, 201, errors=(404, 409))
    async def create(data: BaseModel) -> Answer:
        return await resource.kind.create(services(), actor(), resource.create_input(data)), 201

    @answers(resource.shown_as, errors=(404,))
    async def get(entity_id: str) -> Answer:
        return await resource.kind.get(services(), entity_id), 200

    @answers(resource.shown_as, errors=(404, 409))
    async def update(entity_id: str, data: BaseModel) -> Answer:
        changes = resource.update_input(data)
        return await resource.kind.update(services(), actor(), entity_id, changes), 200

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
    if resource.kind.remove is not None:

        @answers(Deleted, errors=(404, 409))
        async def delete(entity_id: str) -> Answer:
            await resource.kind.delete(services(), actor(), entity_id)
            return {"deleted": entity_id}, 200

        blueprint.add_url_rule(
            f"{base}/<entity_id>", f"delete_{endpoint}", delete, methods=["DELETE"]
        )


for _resource in RESOURCES:
    _register(_resource)
