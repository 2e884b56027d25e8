"""Settings for the server and the agent, read strictly from ``CERTCTL_*`` variables.

Two rules shape this module. A value that does not parse is an error naming the variable,
never a silent fallback to the default (the earlier implementation turned
``CERTCTL_SERVER_PORT=abc`` into port 8080). And ``validate()`` is fail-closed: each unsafe
combination raises its own exception class, importable so tests and operators can tell the
refusals apart, with one sentence naming the variable and the fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from certctl.core.model import KeyRole

# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
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


class LimitInvalid(ConfigError):
    """A rate or burst limit that could not let a single request through."""


class SchedulerIntervalTooShort(ConfigError):
    """A scheduler loop would spin faster than its minimum."""


class UnknownAuthType(ConfigError):
    """The auth type is not one this server implements."""


class APIKeysRequired(ConfigError):
    """API-key authentication is on but no key is configured."""


# --------------------------------------------------------------------------- parsers

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_KEY_NAME = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected true/false (or 1/0, yes/no, on/off), got {raw!r}")


def parse_int(raw: str) -> int:
    try:
        return int(raw.strip(), 10)
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None


def parse_port(raw: str) -> int:
    port = parse_int(raw)
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a TCP port between 1 and 65535, got {port}")
    return port


def parse_duration(raw: str) -> timedelta:
    """Go-style durations (``90s``, ``1h30m``, ``500ms``, ``7d``), as operators write them."""
    text = raw.strip()
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(text):
        raise ValueError(f"expected a duration such as 30s, 5m, 1h30m or 7d, got {raw!r}")
    return timedelta(seconds=total)


def parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def parse_path(raw: str) -> Path:
    return Path(raw.strip()).expanduser()


def parse_str(raw: str) -> str:
    return raw


class AuthType(StrEnum):
    API_KEY = "api-key"
    NONE = "none"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


def _enum_parser(kind: type[StrEnum]) -> Callable[[str], Any]:
    def parse(raw: str) -> StrEnum:
        try:
            return kind(raw.strip().lower())
        except ValueError:
            choices = ", ".join(member.value for member in kind)
            raise ValueError(f"expected one of {choices}, got {raw!r}") from None

    return parse


def parse_auth_type(raw: str) -> str:
    """Kept as text so that ``validate()`` can explain ``jwt`` instead of a bare parse error."""
    return raw.strip().lower()


@dataclass(frozen=True, slots=True)
class APIKey:
    """An operator key; the same name may hold two keys while a rotation is in progress."""

    name: str
    key: str
    role: KeyRole = KeyRole.OPERATOR


def parse_api_keys(raw: str) -> tuple[APIKey, ...]:
    """``name:key[:role]`` entries; the role is viewer, operator (the default) or admin."""
    roles = ", ".join(role.value for role in KeyRole)
    keys: list[APIKey] = []
    for entry in parse_list(raw):
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not parts[1]:
            raise ValueError("each entry must be name:key or name:key:role")
        name, key = parts[0], parts[1]
        if not _KEY_NAME.fullmatch(name):
            raise ValueError(f"key name {name!r} may contain only letters, digits, - and _")
        try:
            role = KeyRole(parts[2]) if len(parts) == 3 else KeyRole.OPERATOR
        except ValueError:
            raise ValueError(
                f"the role of {name!r} must be one of {roles}, got {parts[2]!r}"
            ) from None
        for other in keys:
            if other.name == name and other.key == key:
                raise ValueError(f"key for {name!r} is listed twice")
            if other.name == name and other.role is not role:
                raise ValueError(
                    f"name {name!r} appears with roles {other.role} and {role}; rotate like "
                    "for like"
                )
        keys.append(APIKey(name=name, key=key, role=role))
    return tuple(keys)


def default_data_dir() -> Path:
    """Per-user data directory (XDG), so a first run needs no root and no flags."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "certctl"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Var:
    """How one field is read: its variable, parser, default, and whether it is a secret."""

    env: str
    parse: Callable[[str], Any]
    default: Any
    secret: bool = False


_D = parse_duration

SPECS: dict[str, Var] = {
    # Paths and data
    "data_dir": Var("CERTCTL_DATA_DIR", parse_path, None),
    # Server listener
    "server_host": Var("CERTCTL_SERVER_HOST", str.strip, "127.0.0.1"),
    "server_port": Var("CERTCTL_SERVER_PORT", parse_port, 8443),
    "server_workers": Var("CERTCTL_SERVER_WORKERS", parse_int, 1),
    "server_tls_cert_path": Var("CERTCTL_SERVER_TLS_CERT_PATH", parse_path, None),
    "server_tls_key_path": Var("CERTCTL_SERVER_TLS_KEY_PATH", parse_path, None),
    "max_body_size": Var("CERTCTL_MAX_BODY_SIZE", parse_int, 1 << 20),
    "audit_flush_timeout": Var("CERTCTL_AUDIT_FLUSH_TIMEOUT", _D, timedelta(seconds=30)),
    "server_read_timeout": Var("CERTCTL_SERVER_READ_TIMEOUT", _D, timedelta(seconds=30)),
    "server_idle_timeout": Var("CERTCTL_SERVER_IDLE_TIMEOUT", _D, timedelta(seconds=60)),
    # Database
    "database_url": Var("CERTCTL_DATABASE_URL", parse_str, None, secret=True),
    "database_max_conns": Var("CERTCTL_DATABASE_MAX_CONNS", parse_int, 25),
    # Logging
    "log_level": Var("CERTCTL_LOG_LEVEL", _enum_parser(LogLevel), LogLevel.INFO),
    "log_format": Var("CERTCTL_LOG_FORMAT", _enum_parser(LogFormat), LogFormat.JSON),
    # Authentication and exposure
    "auth_type": Var("CERTCTL_AUTH_TYPE", parse_auth_type, AuthType.API_KEY.value),
    "api_keys": Var("CERTCTL_API_KEYS", parse_api_keys, (), secret=True),
    "agent_bootstrap_token": Var("CERTCTL_AGENT_BOOTSTRAP_TOKEN", parse_str, "", secret=True),
    "agent_bootstrap_token_deny_empty": Var(
        "CERTCTL_AGENT_BOOTSTRAP_TOKEN_DENY_EMPTY", parse_bool, True
    ),
    "cors_origins": Var("CERTCTL_CORS_ORIGINS", parse_list, ()),
    "rate_limit_enabled": Var("CERTCTL_RATE_LIMIT_ENABLED", parse_bool, True),
    "rate_limit_rps": Var("CERTCTL_RATE_LIMIT_RPS", parse_int, 50),
    "rate_limit_burst": Var("CERTCTL_RATE_LIMIT_BURST", parse_int, 100),
    "auth_failures_per_minute": Var("CERTCTL_AUTH_FAILURES_PER_MINUTE", parse_int, 10),
    "auth_failure_burst": Var("CERTCTL_AUTH_FAILURE_BURST", parse_int, 20),
    # Secrets at rest and the local CA
    "config_encryption_key": Var("CERTCTL_CONFIG_ENCRYPTION_KEY", parse_str, "", secret=True),
    "ca_cert_path": Var("CERTCTL_CA_CERT_PATH", parse_path, None),
    "ca_key_path": Var("CERTCTL_CA_KEY_PATH", parse_path, None),
    # Insecure switches and their acknowledgements
    "acme_insecure": Var("CERTCTL_ACME_INSECURE", parse_bool, False),
    "acme_insecure_ack": Var("CERTCTL_ACME_INSECURE_ACK", parse_bool, False),
    "demo_mode_ack": Var("CERTCTL_DEMO_MODE_ACK", parse_bool, False),
    "demo_mode_ack_ts": Var("CERTCTL_DEMO_MODE_ACK_TS", parse_int, None),
    # Scheduler
    "renewal_check_interval": Var(
        "CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL", _D, timedelta(hours=1)
    ),
    "job_processor_interval": Var(
        "CERTCTL_SCHEDULER_JOB_PROCESSOR_INTERVAL", _D, timedelta(seconds=30)
    ),
    "agent_health_check_interval": Var(
        "CERTCTL_SCHEDULER_AGENT_HEALTH_CHECK_INTERVAL", _D, timedelta(minutes=2)
    ),
    "retry_interval": Var("CERTCTL_SCHEDULER_RETRY_INTERVAL", _D, timedelta(minutes=5)),
    "job_timeout_interval": Var("CERTCTL_JOB_TIMEOUT_INTERVAL", _D, timedelta(minutes=10)),
    "job_awaiting_csr_timeout": Var("CERTCTL_JOB_AWAITING_CSR_TIMEOUT", _D, timedelta(hours=24)),
    "job_awaiting_approval_timeout": Var(
        "CERTCTL_JOB_AWAITING_APPROVAL_TIMEOUT", _D, timedelta(hours=168)
    ),
    "agent_offline_after": Var("CERTCTL_AGENT_OFFLINE_AFTER", _D, timedelta(minutes=5)),
    # Deploys (agent side)
    "deploy_backup_retention": Var("CERTCTL_DEPLOY_BACKUP_RETENTION", parse_int, 3),
    "verify_deployment": Var("CERTCTL_VERIFY_DEPLOYMENT", parse_bool, True),
    "verify_timeout": Var("CERTCTL_VERIFY_TIMEOUT", _D, timedelta(seconds=10)),
    # Agent
    "server_url": Var("CERTCTL_SERVER_URL", str.strip, "https://localhost:8443"),
    "server_ca_bundle_path": Var("CERTCTL_SERVER_CA_BUNDLE_PATH", parse_path, None),
    "server_tls_insecure_skip_verify": Var(
        "CERTCTL_SERVER_TLS_INSECURE_SKIP_VERIFY", parse_bool, False
    ),
    "agent_name": Var("CERTCTL_AGENT_NAME", str.strip, None),
    "agent_state_dir": Var("CERTCTL_AGENT_STATE_DIR", parse_path, None),
    "agent_policy_file": Var("CERTCTL_AGENT_POLICY_FILE", parse_path, None),
    "agent_poll_interval": Var("CERTCTL_AGENT_POLL_INTERVAL", _D, timedelta(seconds=30)),
    "agent_heartbeat_interval": Var("CERTCTL_AGENT_HEARTBEAT_INTERVAL", _D, timedelta(seconds=60)),
}

# Floors below which a loop would hammer the database or the agents' own hosts.
SCHEDULER_MINIMUMS: dict[str, timedelta] = {
    "server_read_timeout": timedelta(seconds=1),
    "server_idle_timeout": timedelta(seconds=1),
    "renewal_check_interval": timedelta(minutes=1),
    "job_processor_interval": timedelta(seconds=1),
    "agent_health_check_interval": timedelta(seconds=1),
    "retry_interval": timedelta(seconds=1),
    "job_timeout_interval": timedelta(seconds=1),
    "job_awaiting_csr_timeout": timedelta(seconds=1),
    "job_awaiting_approval_timeout": timedelta(seconds=1),
    "agent_offline_after": timedelta(seconds=1),
    "agent_poll_interval": timedelta(seconds=1),
    "agent_heartbeat_interval": timedelta(seconds=1),
}

# Values that appear as examples in our docs, compose files and the earlier project's
# docs. Copy-pasted examples are the most common leaked credential, so they are refused
# outside demo mode just like any value starting with ``change-me``.
EXAMPLE_SECRETS = frozenset(
    {
        "change-me-in-production",
        "change-me-32-char-encryption-key",
        "example-bootstrap-token",
        "example-api-key",
        "example-encryption-key-at-least-32-bytes",
        "postgres",
        "password",
    }
)

DEMO_ACK_MAX_AGE = timedelta(hours=24)
DEMO_ACK_MAX_SKEW = timedelta(minutes=1)
MIN_ENCRYPTION_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path | None
    server_host: str
    server_port: int
    server_workers: int
    server_tls_cert_path: Path | None
    server_tls_key_path: Path | None
    max_body_size: int
    audit_flush_timeout: timedelta
    server_read_timeout: timedelta
    server_idle_timeout: timedelta
    database_url: str | None
    database_max_conns: int
    log_level: LogLevel
    log_format: LogFormat
    auth_type: str
    api_keys: tuple[APIKey, ...]
    agent_bootstrap_token: str
    agent_bootstrap_token_deny_empty: bool
    cors_origins: tuple[str, ...]
    rate_limit_enabled: bool
    rate_limit_rps: int
    rate_limit_burst: int
    auth_failures_per_minute: int
    auth_failure_burst: int
    config_encryption_key: str
    ca_cert_path: Path | None
    ca_key_path: Path | None
    acme_insecure: bool
    acme_insecure_ack: bool
    demo_mode_ack: bool
    demo_mode_ack_ts: int | None
    renewal_check_interval: timedelta
    job_processor_interval: timedelta
    agent_health_check_interval: timedelta
    retry_interval: timedelta
    job_timeout_interval: timedelta
    job_awaiting_csr_timeout: timedelta
    job_awaiting_approval_timeout: timedelta
    agent_offline_after: timedelta
    deploy_backup_retention: int
    verify_deployment: bool
    verify_timeout: timedelta
    server_url: str
    server_ca_bundle_path: Path | None
    server_tls_insecure_skip_verify: bool
    agent_name: str | None
    agent_state_dir: Path | None
    agent_policy_file: Path | None
    agent_poll_interval: timedelta
    agent_heartbeat_interval: timedelta

    @property
    def effective_data_dir(self) -> Path:
        return self.data_dir or default_data_dir()

    @property
    def effective_agent_state_dir(self) -> Path:
        return self.agent_state_dir or self.effective_data_dir / "agent"


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every ``CERTCTL_*`` variable; an empty value counts as unset.

    Raises ``ConfigParseError`` for the first variable (in declaration order) whose value
    does not parse, so the operator fixes one line at a time with a precise message.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field, spec in SPECS.items():
        raw = env.get(spec.env, "")
        if raw == "":
            values[field] = spec.default
            continue
        try:
            values[field] = spec.parse(raw)
        except ValueError as exc:
            # Parsers never quote a secret's value in their message; the raw text of a
            # secret is not echoed either.
            shown = "<redacted>" if spec.secret else repr(raw)
            raise ConfigParseError(
                spec.env, f"{spec.env}={shown} does not parse: {exc}; fix or unset it."
            ) from None
    return Settings(**values)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as docker and systemd ``EnvironmentFile=`` read them.

    Blank lines and ``#`` comments are skipped and one pair of matching quotes around a
    value is removed; anything else is an error naming the line, so a typo is not ignored.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            str(path), f"cannot read env file {path}: {exc}; check the path."
        ) from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.removeprefix("export ").partition("=")
        if not sep or not _ENV_NAME.fullmatch(key.strip()):
            raise ConfigError(
                str(path), f"{path}:{number} is not KEY=VALUE; fix or comment out that line."
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


# --------------------------------------------------------------------------- validation


class Role(StrEnum):
    SERVER = "server"
    AGENT = "agent"


def demo_mode(settings: Settings, now: datetime) -> bool:
    """Demo mode is on only while its acknowledgement is present and fresh."""
    if not settings.demo_mode_ack or settings.demo_mode_ack_ts is None:
        return False
    age = now.timestamp() - settings.demo_mode_ack_ts
    return -DEMO_ACK_MAX_SKEW.total_seconds() <= age <= DEMO_ACK_MAX_AGE.total_seconds()


def validate(settings: Settings, *, role: Role, now: datetime) -> None:
    """Refuse unsafe configurations; the first failing rule raises its own exception class."""
    _check_demo_ack(settings, now)
    _check_acme_insecure(settings)
    _check_intervals(settings)
    if role is Role.SERVER:
        _check_server(settings, demo=demo_mode(settings, now))
    else:
        _check_agent(settings, demo=demo_mode(settings, now))


def _check_demo_ack(settings: Settings, now: datetime) -> None:
    if not settings.demo_mode_ack:
        return
    ts = settings.demo_mode_ack_ts
    if ts is None:
        raise DemoModeAckExpired(
            "CERTCTL_DEMO_MODE_ACK_TS",
            "CERTCTL_DEMO_MODE_ACK=true needs CERTCTL_DEMO_MODE_ACK_TS set to the current unix "
            "time (export CERTCTL_DEMO_MODE_ACK_TS=$(date +%s)), or unset CERTCTL_DEMO_MODE_ACK.",
        )
    if not demo_mode(settings, now):
        raise DemoModeAckExpired(
            "CERTCTL_DEMO_MODE_ACK_TS",
            f"CERTCTL_DEMO_MODE_ACK_TS={ts} is not within the last 24 hours (or is more than a "
            "minute ahead); re-acknowledge with CERTCTL_DEMO_MODE_ACK_TS=$(date +%s) or turn "
            "demo mode off for production.",
        )


def _check_acme_insecure(settings: Settings) -> None:
    if settings.acme_insecure and not settings.acme_insecure_ack:
        raise ACMEInsecureWithoutAck(
            "CERTCTL_ACME_INSECURE_ACK",
            "CERTCTL_ACME_INSECURE=true turns off ACME certificate verification; set "
            "CERTCTL_ACME_INSECURE_ACK=true to accept that, or unset CERTCTL_ACME_INSECURE.",
        )
    if settings.acme_insecure_ack and not settings.acme_insecure:
        raise ACMEInsecureWithoutAck(
            "CERTCTL_ACME_INSECURE",
            "CERTCTL_ACME_INSECURE_ACK=true acknowledges nothing because CERTCTL_ACME_INSECURE "
            "is not true; unset CERTCTL_ACME_INSECURE_ACK.",
        )


def _check_intervals(settings: Settings) -> None:
    for field, minimum in SCHEDULER_MINIMUMS.items():
        value: timedelta = getattr(settings, field)
        if value < minimum:
            env = SPECS[field].env
            raise SchedulerIntervalTooShort(
                env, f"{env} is {_fmt(value)}, below its minimum of {_fmt(minimum)}; raise it."
            )


def _check_server(settings: Settings, *, demo: bool) -> None:
    _check_auth(settings, demo=demo)
    if "*" in settings.cors_origins:
        raise CORSWildcard(
            "CERTCTL_CORS_ORIGINS",
            "CERTCTL_CORS_ORIGINS contains '*'; list the exact origins "
            "(https://console.example.com) that may call the API.",
        )
    if settings.agent_bootstrap_token_deny_empty and not settings.agent_bootstrap_token:
        raise AgentBootstrapTokenRequired(
            "CERTCTL_AGENT_BOOTSTRAP_TOKEN",
            "CERTCTL_AGENT_BOOTSTRAP_TOKEN is empty, which would let anyone register an agent; "
            "set it to a random secret (openssl rand -base64 32).",
        )
    if len(settings.config_encryption_key.encode()) < MIN_ENCRYPTION_KEY_BYTES:
        raise EncryptionKeyTooShort(
            "CERTCTL_CONFIG_ENCRYPTION_KEY",
            f"CERTCTL_CONFIG_ENCRYPTION_KEY is {len(settings.config_encryption_key.encode())} "
            f"bytes, under the {MIN_ENCRYPTION_KEY_BYTES}-byte minimum; generate one with "
            "openssl rand -base64 32.",
        )
    for field in (
        "rate_limit_rps",
        "rate_limit_burst",
        "auth_failures_per_minute",
        "auth_failure_burst",
    ):
        if getattr(settings, field) < 1:
            env = SPECS[field].env
            raise LimitInvalid(env, f"{env} is {getattr(settings, field)}; set it to 1 or more.")
    if settings.database_max_conns < 1:
        raise DatabaseMaxConnsInvalid(
            "CERTCTL_DATABASE_MAX_CONNS",
            f"CERTCTL_DATABASE_MAX_CONNS is {settings.database_max_conns}; set it to 1 or more.",
        )
    if not demo:
        _check_placeholders(
            {
                "CERTCTL_AGENT_BOOTSTRAP_TOKEN": [settings.agent_bootstrap_token],
                "CERTCTL_CONFIG_ENCRYPTION_KEY": [settings.config_encryption_key],
                "CERTCTL_API_KEYS": [k.key for k in settings.api_keys],
                "CERTCTL_DATABASE_URL": [_url_password(settings.database_url)],
            }
        )


def _check_agent(settings: Settings, *, demo: bool) -> None:
    if not demo:
        _check_placeholders({"CERTCTL_AGENT_BOOTSTRAP_TOKEN": [settings.agent_bootstrap_token]})


def _check_auth(settings: Settings, *, demo: bool) -> None:
    if settings.auth_type == "jwt":
        raise UnknownAuthType(
            "CERTCTL_AUTH_TYPE",
            "CERTCTL_AUTH_TYPE=jwt is not supported; put an authenticating gateway (OIDC proxy) "
            "in front of certctl and use CERTCTL_AUTH_TYPE=api-key.",
        )
    if settings.auth_type not in {a.value for a in AuthType}:
        raise UnknownAuthType(
            "CERTCTL_AUTH_TYPE",
            f"CERTCTL_AUTH_TYPE={settings.auth_type!r} is unknown; use api-key (or none for a "
            "loopback-only demo).",
        )
    if settings.auth_type == AuthType.NONE:
        if not _is_loopback(settings.server_host) and not demo:
            raise InsecureAuthExposure(
                "CERTCTL_AUTH_TYPE",
                f"CERTCTL_AUTH_TYPE=none on CERTCTL_SERVER_HOST={settings.server_host} exposes "
                "an unauthenticated API; bind to 127.0.0.1 or use CERTCTL_AUTH_TYPE=api-key.",
            )
    elif not settings.api_keys:
        raise APIKeysRequired(
            "CERTCTL_API_KEYS",
            "CERTCTL_API_KEYS is empty while CERTCTL_AUTH_TYPE=api-key; set "
            "CERTCTL_API_KEYS=name:key[:role] with a random key (openssl rand -base64 32).",
        )


def _check_placeholders(secrets: Mapping[str, list[str | None]]) -> None:
    for env, values in secrets.items():
        for value in values:
            if value and (value in EXAMPLE_SECRETS or value.startswith("change-me")):
                raise PlaceholderCredential(
                    env,
                    f"{env} holds a documented example value; replace it with a random secret "
                    "(openssl rand -base64 32).",
                )


def _url_password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fmt(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


# --------------------------------------------------------------------------- display


def redacted(settings: Settings) -> list[tuple[str, str, bool]]:
    """``(variable, shown value, is_default)`` rows with every secret hidden."""
    rows = []
    for f in fields(settings):
        spec = SPECS[f.name]
        value = getattr(settings, f.name)
        rows.append((spec.env, _show(f.name, value, spec), value == spec.default))
    return rows


def _show(field: str, value: Any, spec: Var) -> str:
    if value is None:
        return "<unset>"
    if spec.secret:
        return _show_secret(field, value)
    if isinstance(value, timedelta):
        return _fmt(value)
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _show_secret(field: str, value: Any) -> str:
    if field == "database_url":
        return _redact_url(str(value))
    if field == "api_keys":
        return ",".join(f"{k.name}:<redacted>:{k.role}" for k in value)
    return "<redacted>" if value else "<unset>"


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":<redacted>@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<redacted: unparseable URL>"
