"""Which credential every route takes: one table, enforced in one place (``app._before``).

Operator keys carry a role (``CERTCTL_API_KEYS="name:key:role"``):

- ``viewer`` reads everything an operator can read, and changes nothing;
- ``operator`` runs the certificate lifecycle: create, update, archive, renew, deploy and
  revoke certificates, cancel jobs;
- ``admin`` changes what the lifecycle runs on: issuers, targets, profiles, renewal
  policies, owners and teams; retires agents; approves and rejects jobs.

Other routes are ``public`` (probes, CRLs), ``bootstrap`` (agent registration, with the
bootstrap token) or ``agent`` (the agent protocol, bound to the path's agent id).

``ROUTES`` names every endpoint of the app; ``create_app`` refuses to build an app with a
route missing from it, so a new route cannot ship without a decision about who may call
it. A path that matches no route needs a valid key (any role), so probing for routes
without a key only ever yields 401.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from certctl.core.model import KeyRole


class Access(enum.Enum):
    PUBLIC = "public"
    BOOTSTRAP = "bootstrap"
    AGENT = "agent"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def role(self) -> KeyRole | None:
        """The operator role this access needs; ``None`` for the non-operator kinds."""
        return _ROLES.get(self)


_ROLES: Final[Mapping[Access, KeyRole]] = MappingProxyType(
    {
        Access.VIEWER: KeyRole.VIEWER,
        Access.OPERATOR: KeyRole.OPERATOR,
        Access.ADMIN: KeyRole.ADMIN,
    }
)

_PUBLIC, _BOOT, _AGENT = Access.PUBLIC, Access.BOOTSTRAP, Access.AGENT
_VIEW, _OPS, _ADMIN = Access.VIEWER, Access.OPERATOR, Access.ADMIN

_INVENTORY: Final = ("teams", "owners", "renewal_policies", "profiles", "issuers", "targets")
_DELETABLE: Final = ("teams", "owners", "renewal_policies", "profiles", "issuers")
"""Targets are retired with their agent, never deleted on their own."""

ROUTES: Final[Mapping[str, Access]] = MappingProxyType(
    {
        # probes, CRLs, the schema, metrics and the summary
        "system.health": _PUBLIC,
        "system.ready": _PUBLIC,
        "system.crl": _PUBLIC,
        "openapi": _VIEW,
        "system.metrics": _VIEW,
        "system.summary": _VIEW,
        "system.auth_check": _VIEW,
        # certificates: reads for everyone, the lifecycle for operators
        "certificates.list_": _VIEW,
        "certificates.get": _VIEW,
        "certificates.versions": _VIEW,
        "certificates.export_pem": _VIEW,
        "certificates.create": _OPS,
        "certificates.update": _OPS,
        "certificates.archive": _OPS,
        "certificates.renew": _OPS,
        "certificates.deploy": _OPS,
        "certificates.revoke": _OPS,
        # configuration: reads for everyone, changes for admins
        **{f"inventory.{verb}_{kind}": _VIEW for kind in _INVENTORY for verb in ("list", "get")},
        **{
            f"inventory.{verb}_{kind}": _ADMIN
            for kind in _INVENTORY
            for verb in ("create", "update")
        },
        **{f"inventory.delete_{kind}": _ADMIN for kind in _DELETABLE},
        # agents as operators see them
        "agents.list_agents": _VIEW,
        "agents.get_agent": _VIEW,
        "agents.retire": _ADMIN,
        # the agent protocol
        "agents.register": _BOOT,
        "agents.heartbeat": _AGENT,
        "agents.work": _AGENT,
        "agents.csr": _AGENT,
        "agents.certificate": _AGENT,
        "agents.job": _AGENT,
        "agents.status": _AGENT,
        "agents.targets": _AGENT,
        # jobs and the audit trail
        "jobs.list_jobs": _VIEW,
        "jobs.get_job": _VIEW,
        "jobs.list_audit": _VIEW,
        "jobs.cancel": _OPS,
        "jobs.approve": _ADMIN,
        "jobs.reject": _ADMIN,
    }
)

UNMATCHED: Final = Access.VIEWER
"""What a request that matched no route needs: any valid key, so it learns nothing."""


def access_of(endpoint: str | None) -> Access:
    """The access of a matched endpoint; ``UNMATCHED`` for a path that matched nothing."""
    if endpoint is None:
        return UNMATCHED
    return ROUTES[endpoint]


def undeclared(endpoints: Iterable[str]) -> list[str]:
    """Endpoints of an app that ``ROUTES`` does not name (the app refuses to start)."""
    return sorted(set(endpoints) - set(ROUTES))
