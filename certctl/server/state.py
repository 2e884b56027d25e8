"""What a request handler reaches through ``current_app``: services, keys, limits, buffers."""

from __future__ import annotations

from dataclasses import dataclass, field

from quart import current_app

from certctl.config import Settings
from certctl.server.audit_log import AuditBuffer
from certctl.server.auth import AgentKeyCache, OperatorKeys
from certctl.server.auth_throttle import AuthThrottle
from certctl.server.ratelimit import RateLimiter
from certctl.server.supervisor import Supervisor
from certctl.services.context import Services

EXTENSION = "certctl"


@dataclass(slots=True)
class ServerState:
    settings: Settings
    services: Services
    operator_keys: OperatorKeys
    audit: AuditBuffer
    limiter: RateLimiter | None
    supervisor: Supervisor
    throttle: AuthThrottle
    agent_keys: AgentKeyCache = field(default_factory=AgentKeyCache)


def state() -> ServerState:
    found: ServerState = current_app.extensions[EXTENSION]
    return found


def services() -> Services:
    return state().services
