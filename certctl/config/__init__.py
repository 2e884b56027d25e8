"""Settings for the server and the agent, read strictly from ``CERTCTL_*`` variables.

Every setting is declared once, in ``_settings.Settings``: its variable, parser, default,
the roles that read it and its documentation. From that one declaration ``load`` parses
the environment, ``validate`` refuses unsafe values for a role, ``redacted`` shows a role's
variables and ``reference`` writes docs/configuration.md. A value that does not parse is an
error naming the variable, never a silent fallback to the default.
"""

from __future__ import annotations

from certctl.config._display import redacted
from certctl.config._errors import (
    ACMEInsecureWithoutAck,
    AgentBootstrapTokenRequired,
    APIKeysRequired,
    ConfigError,
    ConfigParseError,
    CORSWildcard,
    DatabaseMaxConnsInvalid,
    DemoModeAckExpired,
    EncryptionKeyTooShort,
    InsecureAuthExposure,
    LimitInvalid,
    PlaceholderCredential,
    SchedulerIntervalTooShort,
    UnknownAuthType,
    WorkersInvalid,
)
from certctl.config._parse import (
    APIKey,
    AuthType,
    LogFormat,
    LogLevel,
    parse_api_keys,
)
from certctl.config._settings import (
    SPECS,
    Role,
    Settings,
    Var,
    default_data_dir,
    load,
    read_env_file,
)
from certctl.config._validate import EXAMPLE_SECRETS, demo_mode, validate
from certctl.core.durations import format_duration, parse_duration

__all__ = [
    "EXAMPLE_SECRETS",
    "SPECS",
    "ACMEInsecureWithoutAck",
    "APIKey",
    "APIKeysRequired",
    "AgentBootstrapTokenRequired",
    "AuthType",
    "CORSWildcard",
    "ConfigError",
    "ConfigParseError",
    "DatabaseMaxConnsInvalid",
    "DemoModeAckExpired",
    "EncryptionKeyTooShort",
    "InsecureAuthExposure",
    "LimitInvalid",
    "LogFormat",
    "LogLevel",
    "PlaceholderCredential",
    "Role",
    "SchedulerIntervalTooShort",
    "Settings",
    "UnknownAuthType",
    "Var",
    "WorkersInvalid",
    "default_data_dir",
    "demo_mode",
    "format_duration",
    "load",
    "parse_api_keys",
    "parse_duration",
    "read_env_file",
    "redacted",
    "validate",
]
