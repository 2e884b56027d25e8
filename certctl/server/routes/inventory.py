"""Configuration resources with the same five routes each: list, create, get, replace,
delete. One ``Resource`` description per kind drives all of them, so the routes of the
six kinds cannot drift apart (validation, audit, status codes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from quart import Blueprint
from quart.wrappers import Response
from quart_schema import validate_request

from certctl.core.model import (
    CertificateProfile,
    Issuer,
    KeyRule,
    Owner,
    RenewalPolicy,
    Target,
    Team,
)
from certctl.server.routes.common import actor, reply
from certctl.server.schemas import (
    IssuerIn,
    OwnerIn,
    PolicyIn,
    ProfileIn,
    TargetIn,
    TargetUpdate,
    TeamIn,
)
from certctl.server.state import services
from certctl.services import inventory
from certctl.services.context import Services
from certctl.services.errors import InvalidInput
from certctl.store.base import Store

blueprint = Blueprint("inventory", __name__, url_prefix="/api/v1")
Reply = tuple[Response, int]
Build = Callable[[Any, str, datetime, Any], Any]
Check = Callable[[Services, Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    path: str
    prefix: str
    create_model: type[BaseModel]
    update_model: type[BaseModel]
    build: Build
    store_name: str
    plural: str
    check: Check | None = None
    deletable: bool = True


def _team(data: TeamIn, entity_id: str, now: datetime, old: Team | None) -> Team:
    return Team(entity_id, data.name, old.created_at if old else now, now, data.description)


def _owner(data: OwnerIn, entity_id: str, now: datetime, old: Owner | None) -> Owner:
    return Owner(entity_id, data.name, data.email, data.team_id)


def _policy(data: PolicyIn, entity_id: str, now: datetime, old: RenewalPolicy | None) -> Any:
    return RenewalPolicy(id=entity_id, **_tuples(data.model_dump(exclude={"id"})))


def _profile(data: ProfileIn, entity_id: str, now: datetime, old: object) -> CertificateProfile:
    fields: dict[str, Any] = data.model_dump(exclude={"id", "allowed_key_algorithms"})
    return CertificateProfile(
        id=entity_id,
        allowed_key_algorithms=tuple(
            KeyRule(r.algorithm, r.min_size) for r in data.allowed_key_algorithms
        ),
        **_tuples(fields),
    )


def _tuples(fields: dict[str, Any]) -> dict[str, Any]:
    """Entities hold tuples where pydantic gives lists (they are frozen and hashable)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


def _issuer(data: IssuerIn, entity_id: str, now: datetime, old: object) -> Issuer:
    return Issuer(entity_id, data.name, data.type, data.config, data.enabled)  # type: ignore[arg-type]


def _target(
    data: TargetIn | TargetUpdate, entity_id: str, now: datetime, old: Target | None
) -> Target:
    if old is not None:
        # ``null`` on update means "leave as is", as for certificates: a ``None`` name,
        # config or enabled flag must never reach the stored target.
        changes = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
        return replace(old, **changes)
    assert isinstance(data, TargetIn)
    return Target(entity_id, data.name, data.type, data.agent_id, data.config, data.enabled)  # type: ignore[arg-type]


async def _check_issuer(services: Services, issuer: Issuer) -> None:
    inventory.check_issuer(services, issuer)


async def _check_target(services: Services, target: Target) -> None:
    inventory.check_target_config(target)
    await inventory.check_target_agent(services, target)


RESOURCES: Sequence[Resource] = (
    Resource("team", "teams", "team", TeamIn, TeamIn, _team, "team", "teams"),
    Resource("owner", "owners", "owner", OwnerIn, OwnerIn, _owner, "owner", "owners"),
    Resource(
        "renewal_policy",
        "renewal-policies",
        "rp",
        PolicyIn,
        PolicyIn,
        _policy,
        "policy",
        "policies",
    ),
    Resource("profile", "profiles", "prof", ProfileIn, ProfileIn, _profile, "profile", "profiles"),
    Resource(
        "issuer",
        "issuers",
        "iss",
        IssuerIn,
        IssuerIn,
        _issuer,
        "issuer",
        "issuers",
        _check_issuer,
    ),
    Resource(
        "target",
        "targets",
        "target",
        TargetIn,
        TargetUpdate,
        _target,
        "target",
        "targets",
        _check_target,
        deletable=False,
    ),
)


def _op(store: Store, verb: str, resource: Resource) -> Callable[..., Awaitable[Any]]:
    name = resource.plural if verb == "list" else resource.store_name
    op: Callable[..., Awaitable[Any]] = getattr(store, f"{verb}_{name}")
    return op


def _register(resource: Resource) -> None:
    base = f"/{resource.path}"

    async def save(svc: Services, entity: Any, entity_id: str, verb: str, action: str) -> Any:
        """Check the entity as its kind requires, then write it with its audit event."""
        if resource.check is not None:
            await resource.check(svc, entity)
        return await inventory.write(
            svc,
            actor(),
            _op(svc.store, verb, resource),
            entity,
            kind=resource.kind,
            entity_id=entity_id,
            action=action,
        )

    async def list_all() -> Reply:
        return reply({"items": await _op(services().store, "list", resource)()})

    async def create(data: Any) -> Reply:
        svc = services()
        entity_id = getattr(data, "id", None) or svc.new_id(resource.prefix)
        entity = resource.build(data, entity_id, svc.now(), None)
        return reply(await save(svc, entity, entity_id, "create", "created"), 201)

    async def get(entity_id: str) -> Reply:
        return reply(await _op(services().store, "get", resource)(entity_id))

    async def update(entity_id: str, data: Any) -> Reply:
        svc = services()
        body_id = getattr(data, "id", None)
        if body_id not in (None, entity_id):
            raise InvalidInput(f"id {body_id!r} in the body differs from the path; drop it.")
        old = await _op(svc.store, "get", resource)(entity_id)
        entity = resource.build(data, entity_id, svc.now(), old)
        return reply(await save(svc, entity, entity_id, "update", "updated"))

    async def delete(entity_id: str) -> Reply:
        svc = services()
        await inventory.write(
            svc,
            actor(),
            _op(svc.store, "delete", resource),
            entity_id,
            kind=resource.kind,
            entity_id=entity_id,
            action="deleted",
        )
        return reply({"deleted": entity_id})

    endpoint = resource.path.replace("-", "_")
    blueprint.add_url_rule(base, f"list_{endpoint}", list_all, methods=["GET"])
    blueprint.add_url_rule(
        base,
        f"create_{endpoint}",
        validate_request(resource.create_model)(create),
        methods=["POST"],
    )
    blueprint.add_url_rule(f"{base}/<entity_id>", f"get_{endpoint}", get, methods=["GET"])
    blueprint.add_url_rule(
        f"{base}/<entity_id>",
        f"update_{endpoint}",
        validate_request(resource.update_model)(update),
        methods=["PUT"],
    )
    if resource.deletable:
        blueprint.add_url_rule(
            f"{base}/<entity_id>", f"delete_{endpoint}", delete, methods=["DELETE"]
        )


for _resource in RESOURCES:
    _register(_resource)
