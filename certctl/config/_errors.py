"""Every refusal of the configuration, one class each.

Each unsafe combination raises its own class, importable so that tests and operators can
tell the refusals apart; the message is one sentence naming the variable and the fix.
"""

from __future__ import annotations

from certctl.core.errors import CertctlError


class ConfigError(CertctlError):
    """Base of every configuration refusal; ``variable`` names the one at fault."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(message)
        self.variable = variable


class ConfigParseError(ConfigError):
    """A variable's value does not parse as its type."""


class AgentBootstrapTokenRequired(ConfigError):
    """Registration would be open to anyone who can reach the server."""


class ACMEInsecureWithoutAck(ConfigError):
    """ACME certificate verification is off without the explicit acknowledgement."""


class DemoModeAckExpired(ConfigError):
    """The demo acknowledgement is missing its timestamp or is older than 24 hours."""


class PlaceholderCredential(ConfigError):
    """A secret still holds a documented example value."""


class InsecureAuthExposure(ConfigError):
    """Authentication is off on an address other machines can reach."""


class CORSWildcard(ConfigError):
    """``*`` would let any web page call the API with an operator's browser credentials."""


class EncryptionKeyTooShort(ConfigError):
    """The secrets-at-rest passphrase is missing or under 32 bytes."""


class DatabaseMaxConnsInvalid(ConfigError):
    """The connection pool could not hold a single connection."""


class WorkersInvalid(ConfigError):
    """The server would start no worker process to serve requests."""


class LimitInvalid(ConfigError):
    """A rate or burst limit that could not let a single request through."""


class SchedulerIntervalTooShort(ConfigError):
    """A scheduler loop would spin faster than its minimum."""


class UnknownAuthType(ConfigError):
    """The auth type is not one this server implements."""


class APIKeysRequired(ConfigError):
    """API-key authentication is on but no key is configured."""
