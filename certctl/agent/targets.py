"""A target's connector as this agent runs it: the target's config over the agent's defaults.

Two agent settings fill what a target leaves unset: ``CERTCTL_DEPLOY_BACKUP_RETENTION``
(backups kept per file) and ``CERTCTL_VERIFY_TIMEOUT`` (one verification handshake); and
``CERTCTL_VERIFY_DEPLOYMENT=false`` turns verification off on this host whatever the
targets say, for hosts that cannot reach their own endpoints.

The control plane sends a target's ``secret`` inside its config; it is passed on only to
a connector whose schema declares a ``secret`` field, since every schema refuses unknown
fields and no other connector has a use for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from certctl.config import Settings
from certctl.connectors.targets.fields import show_seconds
from certctl.connectors.targets.registry import CONNECTORS, AnyConnector, target_type
from certctl.protocol import TargetSpec

SECRET_FIELD = "secret"  # noqa: S105 - the name of a config field, not a credential


def connector_for(target: TargetSpec, settings: Settings) -> AnyConnector:
    """Raises ``TargetConfigInvalid`` naming the field at fault."""
    connector = CONNECTORS[target_type(target.type)]
    return connector.from_config(with_agent_defaults(target.config, connector, settings))


def with_agent_defaults(
    config: Mapping[str, Any], connector: type[AnyConnector], settings: Settings
) -> dict[str, Any]:
    merged = dict(config)
    if SECRET_FIELD not in connector.schema.model_fields:
        merged.pop(SECRET_FIELD, None)
    merged.setdefault("backup_retention", settings.deploy_backup_retention)
    verify = merged.get("post_deploy_verify", {})
    if isinstance(verify, Mapping):  # anything else is left for the schema to refuse
        verify = dict(verify)
        verify.setdefault("timeout", show_seconds(settings.verify_timeout.total_seconds()))
        if not settings.verify_deployment:
            verify["enabled"] = False
        merged["post_deploy_verify"] = verify
    return merged
