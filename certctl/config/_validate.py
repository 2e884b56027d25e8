"""``validate``: the fail-closed refusals, for the role a process starts as.

Each unsafe combination raises its own ``ConfigError`` subclass with one sentence naming the
variable and the fix. Only the variables the role reads are checked (a floor on the agent's
poll interval never stops a server), so ``certctl config check --role R`` refuses exactly
what process R would.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from certctl.config._errors import (
    ACMEInsecureWithoutAck,
    AgentBootstrapTokenRequired,
    APIKeysRequired,
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
from certctl.config._parse import AuthType
from certctl.config._settings import SPECS, Role, Settings

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
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
_AT_LEAST_ONE = (
    "rate_limit_rps",
    "rate_limit_burst",
    "auth_failures_per_minute",
    "auth_failure_burst",
    "max_waiting_agents",
)


def demo_mode(settings: Settings, now: datetime) -> bool:
    """Demo mode is on only while its acknowledgement is present and fresh."""
    if not settings.demo_mode_ack or settings.demo_mode_ack_ts is None:
        return False
    age = now.timestamp() - settings.demo_mode_ack_ts
    return -DEMO_ACK_MAX_SKEW.total_seconds() <= age <= DEMO_ACK_MAX_AGE.total_seconds()


def validate(settings: Settings, *, role: Role, now: datetime) -> None:
    """Refuse unsafe configurations; the first failing rule raises its own exception class."""
    _check_demo_ack(settings, now)
    _check_minimums(settings, role)
    if role is Role.SERVER:
        _check_acme_insecure(settings)
        _check_server(settings, demo=demo_mode(settings, now))
    elif not demo_mode(settings, now):
        _check_placeholders({"CERTCTL_AGENT_BOOTSTRAP_TOKEN": [settings.agent_bootstrap_token]})


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


def _check_minimums(settings: Settings, role: Role) -> None:
    """The floors below which a loop would hammer the database or the agents' own hosts."""
    for name, spec in SPECS.items():
        if spec.minimum is None or role not in spec.roles:
            continue
        value: timedelta = getattr(settings, name)
        if value < spec.minimum:
            raise SchedulerIntervalTooShort(
                spec.env,
                f"{spec.env} is {_seconds(value)}, below its minimum of "
                f"{_seconds(spec.minimum)}; raise it.",
            )


def _check_server(settings: Settings, *, demo: bool) -> None:
    if settings.server_workers < 1:
        raise WorkersInvalid(
            "CERTCTL_SERVER_WORKERS",
            f"CERTCTL_SERVER_WORKERS is {settings.server_workers}; set it to 1 or more "
            "(about one per CPU core).",
        )
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
    key_bytes = len(settings.config_encryption_key.encode())
    if key_bytes < MIN_ENCRYPTION_KEY_BYTES:
        raise EncryptionKeyTooShort(
            "CERTCTL_CONFIG_ENCRYPTION_KEY",
            f"CERTCTL_CONFIG_ENCRYPTION_KEY is {key_bytes} bytes, under the "
            f"{MIN_ENCRYPTION_KEY_BYTES}-byte minimum; generate one with openssl rand -base64 32.",
        )
    for name in _AT_LEAST_ONE:
        if getattr(settings, name) < 1:
            env = SPECS[name].env
            raise LimitInvalid(env, f"{env} is {getattr(settings, name)}; set it to 1 or more.")
    if settings.agent_poll_wait_max >= settings.agent_offline_after:
        raise LimitInvalid(
            "CERTCTL_AGENT_POLL_WAIT_MAX",
            f"CERTCTL_AGENT_POLL_WAIT_MAX is {_seconds(settings.agent_poll_wait_max)}, not "
            f"below CERTCTL_AGENT_OFFLINE_AFTER ({_seconds(settings.agent_offline_after)}), so "
            "a waiting agent would be marked Offline; lower it.",
        )
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


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"
