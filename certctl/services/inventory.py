"""Configuration entities (teams, owners, policies, profiles, issuers, targets): the
create, get, update, list and delete use cases, each write validated and audited, and the
defaults every installation starts with.

Target configuration is validated by the target's own connector schema here, on the
server, so a typo is a 400 at creation instead of a failed deployment on the host later;
the agent validates again before use. Ids are generated here when the caller gives none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol, TypeVar

import trio

from certctl.connectors.issuers.local import import_ca
from certctl.connectors.targets.base import TargetConfigInvalid
from certctl.connectors.targets.registry import load_connector
from certctl.core.model import (
    CertificateProfile,
    ExtendedKeyUsage,
    Issuer,
    IssuerType,
    JSONValue,
    KeyAlgorithm,
    KeyRule,
    Owner,
    RenewalPolicy,
    Target,
    TargetType,
    Team,
)
from certctl.pki.errors import PKIError
from certctl.services import audit
from certctl.services.context import SYSTEM, Actor, Services
from certctl.services.errors import InvalidInput
from certctl.services.issuers import DEFAULT_ISSUER_ID
from certctl.store.errors import Conflict, NotFound

DEFAULT_POLICY_ID: Final = "rp-default"


# -- inputs: what an operator may set, defaults filled by the caller's schema -----------


@dataclass(frozen=True, slots=True)
class TeamInput:
    name: str
    description: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class OwnerInput:
    name: str
    email: str
    team_id: str | None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyInput:
    name: str
    renewal_window_days: int
    auto_renew: bool
    max_retries: int
    retry_interval_seconds: int
    alert_thresholds_days: Sequence[int]
    certificate_profile_id: str | None
    id: str | None = None


class KeyRuleInput(Protocol):
    """One allowed key rule as parsed by the caller (the API's model has these fields)."""

    @property
    def algorithm(self) -> KeyAlgorithm: ...
    @property
    def min_size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ProfileInput:
    name: str
    description: str
    allowed_key_algorithms: Sequence[KeyRuleInput]
    max_ttl_seconds: int
    allowed_ekus: Sequence[ExtendedKeyUsage]
    required_san_patterns: Sequence[str]
    allow_short_lived: bool
    must_staple: bool
    requires_approval: bool
    enabled: bool
    id: str | None = None


@dataclass(frozen=True, slots=True)
class IssuerInput:
    name: str
    type: IssuerType
    config: Mapping[str, JSONValue]
    enabled: bool
    id: str | None = None


@dataclass(frozen=True, slots=True)
class TargetInput:
    name: str
    type: TargetType
    agent_id: str
    config: Mapping[str, JSONValue]
    enabled: bool


@dataclass(frozen=True, slots=True)
class TargetChanges:
    """``None`` means "leave as is", as for certificates: a ``None`` name, config or
    enabled flag must never reach the stored target."""

    name: str | None = None
    config: Mapping[str, JSONValue] | None = None
    enabled: bool | None = None


# -- teams ----------------------------------------------------------------------------


async def create_team(services: Services, actor: Actor, data: TeamInput) -> Team:
    now = services.now()
    team = Team(_new_id(services, data.id, "team"), data.name, now, now, data.description)
    return await _write(
        services, actor, services.store.create_team, team, kind="team", action="created"
    )


async def get_team(services: Services, team_id: str) -> Team:
    return await services.store.get_team(team_id)


async def list_teams(services: Services) -> Sequence[Team]:
    return await services.store.list_teams()


async def update_team(services: Services, actor: Actor, team_id: str, data: TeamInput) -> Team:
    _same_id(data.id, team_id)
    old = await services.store.get_team(team_id)
    team = Team(team_id, data.name, old.created_at, services.now(), data.description)
    return await _write(
        services, actor, services.store.update_team, team, kind="team", action="updated"
    )


async def delete_team(services: Services, actor: Actor, team_id: str) -> None:
    await _delete(services, actor, services.store.delete_team, team_id, "team")


# -- owners ---------------------------------------------------------------------------


def _owner(data: OwnerInput, owner_id: str) -> Owner:
    return Owner(owner_id, data.name, data.email, data.team_id)


async def create_owner(services: Services, actor: Actor, data: OwnerInput) -> Owner:
    owner = _owner(data, _new_id(services, data.id, "owner"))
    return await _write(
        services, actor, services.store.create_owner, owner, kind="owner", action="created"
    )


async def get_owner(services: Services, owner_id: str) -> Owner:
    return await services.store.get_owner(owner_id)


async def list_owners(services: Services, *, team_id: str | None = None) -> Sequence[Owner]:
    return await services.store.list_owners(team_id=team_id)


async def update_owner(services: Services, actor: Actor, owner_id: str, data: OwnerInput) -> Owner:
    owner = await _replacing(services.store.get_owner, owner_id, data.id, _owner(data, owner_id))
    return await _write(
        services, actor, services.store.update_owner, owner, kind="owner", action="updated"
    )


async def delete_owner(services: Services, actor: Actor, owner_id: str) -> None:
    await _delete(services, actor, services.store.delete_owner, owner_id, "owner")


# -- renewal policies -----------------------------------------------------------------

_POLICY = "renewal_policy"


def _policy(data: PolicyInput, policy_id: str) -> RenewalPolicy:
    return RenewalPolicy(
        id=policy_id,
        name=data.name,
        renewal_window_days=data.renewal_window_days,
        auto_renew=data.auto_renew,
        max_retries=data.max_retries,
        retry_interval_seconds=data.retry_interval_seconds,
        alert_thresholds_days=tuple(data.alert_thresholds_days),
        certificate_profile_id=data.certificate_profile_id,
    )


async def create_policy(services: Services, actor: Actor, data: PolicyInput) -> RenewalPolicy:
    policy = _policy(data, _new_id(services, data.id, "rp"))
    return await _write(
        services, actor, services.store.create_policy, policy, kind=_POLICY, action="created"
    )


async def get_policy(services: Services, policy_id: str) -> RenewalPolicy:
    return await services.store.get_policy(policy_id)


async def list_policies(services: Services) -> Sequence[RenewalPolicy]:
    return await services.store.list_policies()


async def update_policy(
    services: Services, actor: Actor, policy_id: str, data: PolicyInput
) -> RenewalPolicy:
    get, policy = services.store.get_policy, _policy(data, policy_id)
    policy = await _replacing(get, policy_id, data.id, policy)
    return await _write(
        services, actor, services.store.update_policy, policy, kind=_POLICY, action="updated"
    )


async def delete_policy(services: Services, actor: Actor, policy_id: str) -> None:
    await _delete(services, actor, services.store.delete_policy, policy_id, _POLICY)


# -- certificate profiles -------------------------------------------------------------


def _profile(data: ProfileInput, profile_id: str) -> CertificateProfile:
    return CertificateProfile(
        id=profile_id,
        name=data.name,
        description=data.description,
        allowed_key_algorithms=tuple(
            KeyRule(r.algorithm, r.min_size) for r in data.allowed_key_algorithms
        ),
        max_ttl_seconds=data.max_ttl_seconds,
        allowed_ekus=tuple(data.allowed_ekus),
        required_san_patterns=tuple(data.required_san_patterns),
        allow_short_lived=data.allow_short_lived,
        must_staple=data.must_staple,
        requires_approval=data.requires_approval,
        enabled=data.enabled,
    )


async def create_profile(
    services: Services, actor: Actor, data: ProfileInput
) -> CertificateProfile:
    profile = _profile(data, _new_id(services, data.id, "prof"))
    create = services.store.create_profile
    return await _write(services, actor, create, profile, kind="profile", action="created")


async def get_profile(services: Services, profile_id: str) -> CertificateProfile:
    return await services.store.get_profile(profile_id)


async def list_profiles(services: Services) -> Sequence[CertificateProfile]:
    return await services.store.list_profiles()


async def update_profile(
    services: Services, actor: Actor, profile_id: str, data: ProfileInput
) -> CertificateProfile:
    get, profile = services.store.get_profile, _profile(data, profile_id)
    profile = await _replacing(get, profile_id, data.id, profile)
    update = services.store.update_profile
    return await _write(services, actor, update, profile, kind="profile", action="updated")


async def delete_profile(services: Services, actor: Actor, profile_id: str) -> None:
    await _delete(services, actor, services.store.delete_profile, profile_id, "profile")


# -- issuers --------------------------------------------------------------------------


def _issuer(services: Services, data: IssuerInput, issuer_id: str) -> Issuer:
    """The issuer, its configuration checked by the issuer pool before anything is written."""
    issuer = Issuer(issuer_id, data.name, data.type, dict(data.config), data.enabled)
    check_issuer(services, issuer)
    return issuer


async def create_issuer(services: Services, actor: Actor, data: IssuerInput) -> Issuer:
    issuer = _issuer(services, data, _new_id(services, data.id, "iss"))
    return await _write(
        services, actor, services.store.create_issuer, issuer, kind="issuer", action="created"
    )


async def get_issuer(services: Services, issuer_id: str) -> Issuer:
    return await services.store.get_issuer(issuer_id)


async def list_issuers(services: Services) -> Sequence[Issuer]:
    return await services.store.list_issuers()


async def update_issuer(
    services: Services, actor: Actor, issuer_id: str, data: IssuerInput
) -> Issuer:
    _same_id(data.id, issuer_id)
    await services.store.get_issuer(issuer_id)
    issuer = _issuer(services, data, issuer_id)
    return await _write(
        services, actor, services.store.update_issuer, issuer, kind="issuer", action="updated"
    )


async def delete_issuer(services: Services, actor: Actor, issuer_id: str) -> None:
    await _delete(services, actor, services.store.delete_issuer, issuer_id, "issuer")


# -- targets (never deleted: retired with their agent) ----------------------------------


async def create_target(services: Services, actor: Actor, data: TargetInput) -> Target:
    target = Target(
        services.new_id("target"),
        data.name,
        data.type,
        data.agent_id,
        dict(data.config),
        data.enabled,
    )
    await _check_target(services, target)
    return await _write(
        services, actor, services.store.create_target, target, kind="target", action="created"
    )


async def get_target(services: Services, target_id: str) -> Target:
    return await services.store.get_target(target_id)


async def list_targets(
    services: Services, *, agent_id: str | None = None, certificate_id: str | None = None
) -> Sequence[Target]:
    return await services.store.list_targets(agent_id=agent_id, certificate_id=certificate_id)


async def update_target(
    services: Services, actor: Actor, target_id: str, data: TargetChanges
) -> Target:
    old = await services.store.get_target(target_id)
    target = replace(
        old,
        name=old.name if data.name is None else data.name,
        config=old.config if data.config is None else dict(data.config),
        enabled=old.enabled if data.enabled is None else data.enabled,
    )
    await _check_target(services, target)
    return await _write(
        services, actor, services.store.update_target, target, kind="target", action="updated"
    )


async def _check_target(services: Services, target: Target) -> None:
    check_target_config(target)
    await check_target_agent(services, target)


# -- shared ---------------------------------------------------------------------------


class _Entity(Protocol):
    @property
    def id(self) -> str: ...


_T = TypeVar("_T", bound=_Entity)


def _new_id(services: Services, given: str | None, prefix: str) -> str:
    return given or services.new_id(prefix)


def _same_id(body_id: str | None, path_id: str) -> None:
    if body_id not in (None, path_id):
        raise InvalidInput(f"id {body_id!r} in the body differs from the path; drop it.")


async def _replacing(
    get: Callable[[str], Awaitable[object]], entity_id: str, body_id: str | None, new: _T
) -> _T:
    """``new``, once the body's id matches the path and the entity exists (else 404)."""
    _same_id(body_id, entity_id)
    await get(entity_id)
    return new


async def _write(
    services: Services,
    actor: Actor,
    operation: Callable[..., Awaitable[_T]],
    entity: _T,
    *,
    kind: str,
    action: str,
) -> _T:
    """Run a store write with its audit event (``<kind>_<action>``)."""
    event = audit.event(services, actor, f"{kind}_{action}", kind, entity.id)
    return await operation(entity, audit=[event])


async def _delete(
    services: Services,
    actor: Actor,
    operation: Callable[..., Awaitable[None]],
    entity_id: str,
    kind: str,
) -> None:
    event = audit.event(services, actor, f"{kind}_deleted", kind, entity_id)
    await operation(entity_id, audit=[event])


def check_target_config(target: Target) -> None:
    config = {k: v for k, v in target.config.items() if k != "secret"}
    try:
        load_connector(target.type, config)
    except TargetConfigInvalid as exc:
        raise InvalidInput(str(exc), field="config") from exc


async def check_target_agent(services: Services, target: Target) -> None:
    try:
        agent = await services.store.get_agent(target.agent_id)
    except NotFound:
        raise InvalidInput(
            f"agent_id {target.agent_id!r} does not exist; register the agent first.",
            field="agent_id",
        ) from None
    if agent.retired_at is not None:
        raise InvalidInput(
            f"agent_id {target.agent_id!r} is retired; pick an active agent.", field="agent_id"
        )


def check_issuer(services: Services, issuer: Issuer) -> None:
    services.issuers.local_config(issuer)


async def import_local_ca(
    services: Services,
    actor: Actor,
    issuer_id: str,
    name: str,
    *,
    cert_pem: bytes,
    key_pem: bytes,
) -> Issuer:
    """A LocalCA issuer signing with an operator's existing CA (or sub-CA).

    Run on the server host (``certctl issuer import-ca``), never through the API: the CA
    is checked, its key sealed into the issuer's data dir like a generated root's, and
    only then is the issuer created. An id already in use is refused before anything is
    written.
    """
    try:
        await services.store.get_issuer(issuer_id)
    except NotFound:
        pass
    else:
        raise InvalidInput(
            f"issuer {issuer_id!r} already exists; import under a new --id.", field="id"
        )
    issuer = Issuer(issuer_id, name, IssuerType.LOCAL_CA, {})
    config = services.issuers.local_config(issuer)
    passphrase = services.issuers.defaults.passphrase or ""
    try:
        authority = await trio.to_thread.run_sync(
            import_ca, config.data_dir, cert_pem, key_pem, passphrase, services.now()
        )
    except PKIError as exc:
        raise InvalidInput(str(exc)) from exc
    subject = authority.certificate.subject.rfc4514_string()
    event = audit.event(
        services, actor, "issuer_imported", "issuer", issuer_id, details={"subject": subject}
    )
    return await services.store.create_issuer(issuer, audit=[event])


async def ensure_defaults(services: Services, *, issuer_config: Mapping[str, JSONValue]) -> None:
    """The local CA issuer and default renewal policy every installation starts with.

    Creating is idempotent: a replica that loses the race sees ``Conflict`` and moves on.
    """
    wanted: list[
        tuple[Callable[[str], Awaitable[object]], Callable[..., Awaitable[object]], str, object]
    ] = [
        (
            services.store.get_issuer,
            services.store.create_issuer,
            DEFAULT_ISSUER_ID,
            Issuer(DEFAULT_ISSUER_ID, "Local CA", IssuerType.LOCAL_CA, dict(issuer_config)),
        ),
        (
            services.store.get_policy,
            services.store.create_policy,
            DEFAULT_POLICY_ID,
            RenewalPolicy(DEFAULT_POLICY_ID, "Default"),
        ),
    ]
    for get, create, entity_id, entity in wanted:
        try:
            await get(entity_id)
        except NotFound:
            try:
                await create(
                    entity, audit=[audit.event(services, SYSTEM, "seeded", "config", entity_id)]
                )
            except Conflict:
                continue
