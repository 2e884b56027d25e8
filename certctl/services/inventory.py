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
from typing import Final, Generic, Protocol, TypeVar

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
from certctl.store.base import Store
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
    id: str | None = None


@dataclass(frozen=True, slots=True)
class TargetChanges:
    """``None`` means "leave as is", as for certificates: a ``None`` name, config or
    enabled flag must never reach the stored target."""

    name: str | None = None
    config: Mapping[str, JSONValue] | None = None
    enabled: bool | None = None
    id: str | None = None


# -- one description per kind, one implementation of the use cases ------------------


class _Entity(Protocol):
    @property
    def id(self) -> str: ...


class _Given(Protocol):
    """An input that may name its id (``None``: generate one, or keep the path's)."""

    @property
    def id(self) -> str | None: ...


_E = TypeVar("_E", bound=_Entity)
_C = TypeVar("_C", bound=_Given)
_U = TypeVar("_U", bound=_Given)

_Write = Callable[..., Awaitable[_E]]
_Remove = Callable[..., Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Rows(Generic[_E]):
    """The store's operations on one kind, bound to one store."""

    get: Callable[[str], Awaitable[_E]]
    list: Callable[..., Awaitable[Sequence[_E]]]
    create: _Write[_E]
    update: _Write[_E]


async def _unchecked(services: Services, entity: object) -> None:
    """Kinds whose entities need no check beyond their input schema."""


@dataclass(frozen=True, slots=True)
class Kind(Generic[_E, _C, _U]):
    """One configuration kind: how an input becomes an entity, what is checked before it
    is written, and where it is stored. Every kind gets the same use cases (ids, the
    body-id rule, checks, audit events ``<name>_<action>``), so none can drift.

    ``remove`` is ``None`` for kinds that are never deleted on their own (targets are
    retired with their agent).
    """

    name: str
    prefix: str
    build: Callable[[Services, _C, str], _E]
    change: Callable[[Services, _U, _E], _E]
    rows: Callable[[Store], Rows[_E]]
    remove: Callable[[Store], _Remove] | None
    check: Callable[[Services, _E], Awaitable[None]] = _unchecked

    async def create(self, services: Services, actor: Actor, data: _C) -> _E:
        entity = self.build(services, data, data.id or services.new_id(self.prefix))
        await self.check(services, entity)
        return await self._write(services, actor, "created", entity)

    async def get(self, services: Services, entity_id: str) -> _E:
        return await self.rows(services.store).get(entity_id)

    async def list(self, services: Services, **filters: str | None) -> Sequence[_E]:
        return await self.rows(services.store).list(**filters)

    async def update(self, services: Services, actor: Actor, entity_id: str, data: _U) -> _E:
        """The entity rebuilt from ``data`` and the stored one (404 when there is none)."""
        if data.id not in (None, entity_id):
            raise InvalidInput(f"id {data.id!r} in the body differs from the path; drop it.")
        entity = self.change(services, data, await self.get(services, entity_id))
        await self.check(services, entity)
        return await self._write(services, actor, "updated", entity)

    async def delete(self, services: Services, actor: Actor, entity_id: str) -> None:
        if self.remove is None:
            raise InvalidInput(f"a {self.name} is never deleted on its own; retire its agent.")
        event = audit.event(services, actor, f"{self.name}_deleted", self.name, entity_id)
        await self.remove(services.store)(entity_id, audit=[event])

    async def _write(self, services: Services, actor: Actor, action: str, entity: _E) -> _E:
        rows = self.rows(services.store)
        write = rows.create if action == "created" else rows.update
        event = audit.event(services, actor, f"{self.name}_{action}", self.name, entity.id)
        return await write(entity, audit=[event])


# -- the kinds ------------------------------------------------------------------------


def _team(services: Services, data: TeamInput, team_id: str) -> Team:
    now = services.now()
    return Team(team_id, data.name, now, now, data.description)


def _changed_team(services: Services, data: TeamInput, old: Team) -> Team:
    return Team(old.id, data.name, old.created_at, services.now(), data.description)


TEAMS: Final[Kind[Team, TeamInput, TeamInput]] = Kind(
    "team", "team", _team, _changed_team,
    lambda s: Rows(s.get_team, s.list_teams, s.create_team, s.update_team),
    lambda s: s.delete_team,
)  # fmt: skip


def _owner(services: Services, data: OwnerInput, owner_id: str) -> Owner:
    return Owner(owner_id, data.name, data.email, data.team_id)


OWNERS: Final[Kind[Owner, OwnerInput, OwnerInput]] = Kind(
    "owner", "owner", _owner, lambda services, data, old: _owner(services, data, old.id),
    lambda s: Rows(s.get_owner, s.list_owners, s.create_owner, s.update_owner),
    lambda s: s.delete_owner,
)  # fmt: skip


def _policy(services: Services, data: PolicyInput, policy_id: str) -> RenewalPolicy:
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


POLICIES: Final[Kind[RenewalPolicy, PolicyInput, PolicyInput]] = Kind(
    "renewal_policy", "rp", _policy, lambda services, data, old: _policy(services, data, old.id),
    lambda s: Rows(s.get_policy, s.list_policies, s.create_policy, s.update_policy),
    lambda s: s.delete_policy,
)  # fmt: skip


def _profile(services: Services, data: ProfileInput, profile_id: str) -> CertificateProfile:
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


PROFILES: Final[Kind[CertificateProfile, ProfileInput, ProfileInput]] = Kind(
    "profile", "prof", _profile, lambda services, data, old: _profile(services, data, old.id),
    lambda s: Rows(s.get_profile, s.list_profiles, s.create_profile, s.update_profile),
    lambda s: s.delete_profile,
)  # fmt: skip


def _issuer(services: Services, data: IssuerInput, issuer_id: str) -> Issuer:
    return Issuer(issuer_id, data.name, data.type, dict(data.config), data.enabled)


async def _check_issuer(services: Services, issuer: Issuer) -> None:
    """The configuration checked by the issuer pool before anything is written."""
    check_issuer(services, issuer)


ISSUERS: Final[Kind[Issuer, IssuerInput, IssuerInput]] = Kind(
    "issuer", "iss", _issuer, lambda services, data, old: _issuer(services, data, old.id),
    lambda s: Rows(s.get_issuer, s.list_issuers, s.create_issuer, s.update_issuer),
    lambda s: s.delete_issuer,
    _check_issuer,
)  # fmt: skip


def _target(services: Services, data: TargetInput, target_id: str) -> Target:
    return Target(target_id, data.name, data.type, data.agent_id, dict(data.config), data.enabled)


def _changed_target(services: Services, data: TargetChanges, old: Target) -> Target:
    return replace(
        old,
        name=old.name if data.name is None else data.name,
        config=old.config if data.config is None else dict(data.config),
        enabled=old.enabled if data.enabled is None else data.enabled,
    )


async def _check_target(services: Services, target: Target) -> None:
    check_target_config(target)
    await check_target_agent(services, target)


TARGETS: Final[Kind[Target, TargetInput, TargetChanges]] = Kind(
    "target", "target", _target, _changed_target,
    lambda s: Rows(s.get_target, s.list_targets, s.create_target, s.update_target),
    None,
    _check_target,
)  # fmt: skip


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
