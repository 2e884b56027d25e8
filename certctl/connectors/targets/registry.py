"""Target type name → connector class; the one place that knows every target type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from certctl.connectors.targets.apache import Apache
from certctl.connectors.targets.base import Connector, TargetConfigInvalid
from certctl.connectors.targets.caddy import Caddy
from certctl.connectors.targets.dovecot import Dovecot
from certctl.connectors.targets.envoy import Envoy
from certctl.connectors.targets.file import FileTarget
from certctl.connectors.targets.haproxy import HAProxy
from certctl.connectors.targets.nginx import Nginx
from certctl.connectors.targets.postfix import Postfix
from certctl.connectors.targets.traefik import Traefik
from certctl.core.model import TargetType

AnyConnector = Connector[Any]

CONNECTORS: Mapping[TargetType, type[AnyConnector]] = {
    connector.target_type: connector
    for connector in (Nginx, Apache, HAProxy, Traefik, Caddy, Envoy, Postfix, Dovecot, FileTarget)
}


def target_type(name: str | TargetType) -> TargetType:
    """``TargetType`` by value, case-insensitively: ``nginx`` and ``NGINX`` are the same."""
    for known in CONNECTORS:
        if known.value.lower() == str(name).lower():
            return known
    choices = ", ".join(t.value.lower() for t in CONNECTORS)
    raise TargetConfigInvalid(f"target type {name!r} is unknown; choose one of {choices}.")


def load_connector(name: str | TargetType, raw: Mapping[str, Any]) -> AnyConnector:
    """Validate ``raw`` for the named type, with its defaults; raises ``TargetConfigInvalid``."""
    return CONNECTORS[target_type(name)].from_config(raw)
