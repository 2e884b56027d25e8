"""Configuration entities (teams, owners, policies, profiles, issuers, targets): validated,
written with an audit event, and the defaults every installation starts with.

Target configuration is validated by the target's own connector schema here, on the
server, so a typo is a 400 at creation instead of a failed deployment on the host later;
the agent validates again before use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

import trio

from certctl.connectors.issuers.local import import_ca
from certctl.connectors.targets.base import TargetConfigInvalid
from certctl.connectors.targets.registry import load_connector
from certctl.core.model import Issuer, IssuerType, JSONValue, RenewalPolicy, Target
from certctl.pki.errors import PKIError
from certctl.services import audit
from certctl.services.context import SYSTEM, Actor, Services
from certctl.services.errors import InvalidInput
from certctl.services.issuers import DEFAULT_ISSUER_ID
from certctl.store.errors import Conflict, NotFound

_E = TypeVar("_E")

DEFAULT_POLICY_ID: Final = "rp-default"


async def write(
    services: Services,
    actor: Actor,
    operation: Callable[..., Awaitable[_E]],
    argument: object,
    *,
    kind: str,
    entity_id: str,
    action: str,
) -> _E:
    """Run a store write with its audit event (``<kind>_<action>``)."""
    event = audit.event(services, actor, f"{kind}_{action}", kind, entity_id)
    return await operation(argument, audit=[event])


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
