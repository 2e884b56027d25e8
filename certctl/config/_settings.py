"""``Settings``: every ``CERTCTL_*`` variable, each declared once, and ``load``.

A field's one ``setting(...)`` declaration carries its variable, parser, default, the
processes that read it and its documentation, so nothing else can drift from it: ``load``
reads the variables, ``validate`` checks a role's own fields, ``config check --role`` shows one
process's variables and docs/configuration.md is generated from the same metadata
(``certctl.config.reference``). ``setting`` is typed so that mypy checks each parser
and default against the field's annotation.
"""

# ``setting(...)`` is this module's ``dataclasses.field``: it returns a field specifier,
# not a shared default value, which is what RUF009 guards against.
# ruff: noqa: RUF009

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from certctl.config._errors import ConfigError, ConfigParseError
from certctl.config._parse import (
    APIKey,
    AuthType,
    LogFormat,
    LogLevel,
    enum_parser,
    parse_api_keys,
    parse_auth_type,
    parse_bool,
    parse_int,
    parse_list,
    parse_path,
    parse_port,
    parse_str,
)
from certctl.core.durations import parse_duration

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_T = TypeVar("_T")


class Role(StrEnum):
    """The process a configuration is for; each setting names the ones that read it."""

    SERVER = "server"
    AGENT = "agent"


class Section(StrEnum):
    """The headings docs/configuration.md groups the variables under, in this order."""

    LISTENER = "Data and listener"
    DATABASE = "Database"
    LOGGING = "Logging"
    AUTH = "Authentication and exposure"
    SECRETS = "Secrets at rest and the local CA"
    INSECURE = "Insecure switches and their acknowledgements"
    SCHEDULER = "Scheduler"
    DEPLOY = "Deploys and verification"
    AGENT = "Agent"


_SERVER = frozenset({Role.SERVER})
_AGENT = frozenset({Role.AGENT})
_BOTH = _SERVER | _AGENT


@dataclass(frozen=True, slots=True)
class Var:
    """Everything declared about one field: how it is read, by whom, and its documentation.

    ``roles`` are the processes that read the field: ``validate`` and ``config check
    --role`` look only at a role's own fields. ``section`` is its heading in the docs.

    ``minimum`` is the floor ``validate`` enforces on a duration; ``default_doc`` replaces
    the shown default in the docs where the value alone would mislead (``None`` standing
    for a computed path, say).
    """

    env: str
    parse: Callable[[str], Any]
    default: Any
    roles: frozenset[Role]
    section: Section
    doc: str
    secret: bool = False
    minimum: timedelta | None = None
    default_doc: str | None = None


_VAR = "certctl.config.var"


def setting(
    env: str,
    parse: Callable[[str], _T],
    default: _T,
    *,
    roles: frozenset[Role],
    section: Section,
    doc: str,
    secret: bool = False,
    minimum: timedelta | None = None,
    default_doc: str | None = None,
) -> _T:
    """A ``Settings`` field whose metadata is its ``Var``; typed as the value, so mypy sees
    the field's default and checks that ``parse`` and ``default`` fit its annotation."""
    var = Var(env, parse, default, roles, section, doc, secret, minimum, default_doc)
    return field(default=default, metadata={_VAR: var})


def default_data_dir() -> Path:
    """Per-user data directory (XDG), so a first run needs no root and no flags."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "certctl"


_D = parse_duration
_1S = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Settings:
    """The configuration of one process; ``load`` builds it from the environment."""

    data_dir: Path | None = setting(
        "CERTCTL_DATA_DIR",
        parse_path,
        None,
        roles=_BOTH,
        section=Section.LISTENER,
        doc="Where certctl keeps its state: embedded PostgreSQL, the local CA, the agent's "
        "state. *path*",
        default_doc="`$XDG_DATA_HOME/certctl` (else `~/.local/share/certctl`)",
    )
    server_host: str = setting(
        "CERTCTL_SERVER_HOST",
        str.strip,
        "127.0.0.1",
        roles=_SERVER,
        section=Section.LISTENER,
        doc="Address the HTTPS listener binds. Loopback by default; `0.0.0.0` in containers.",
    )
    server_port: int = setting(
        "CERTCTL_SERVER_PORT",
        parse_port,
        8443,
        roles=_SERVER,
        section=Section.LISTENER,
        doc="HTTPS port. *integer* 1 to 65535.",
    )
    server_workers: int = setting(
        "CERTCTL_SERVER_WORKERS",
        parse_int,
        1,
        roles=_SERVER,
        section=Section.LISTENER,
        doc="Server worker processes, about one per CPU core. *integer* ≥ 1 (`WorkersInvalid`).",
    )
    server_tls_cert_path: Path | None = setting(
        "CERTCTL_SERVER_TLS_CERT_PATH",
        parse_path,
        None,
        roles=_SERVER,
        section=Section.LISTENER,
        doc="PEM certificate chain of the HTTPS listener, leaf first. The server refuses to "
        "start, and `certctl config check --role server` fails, unless it is readable, "
        "currently valid, names `CERTCTL_SERVER_HOST` and matches the key; `certctl config "
        "init` and `certctl server init-tls --dir DIR` create a self-signed pair. *path*",
    )
    server_tls_key_path: Path | None = setting(
        "CERTCTL_SERVER_TLS_KEY_PATH",
        parse_path,
        None,
        roles=_SERVER,
        section=Section.LISTENER,
        doc="PEM private key (unencrypted) of that certificate. *path*",
    )
    max_body_size: int = setting(
        "CERTCTL_MAX_BODY_SIZE",
        parse_int,
        1 << 20,
        roles=_SERVER,
        section=Section.LISTENER,
        doc="Largest request body in bytes; larger bodies get 413. *integer*",
    )
    audit_flush_timeout: timedelta = setting(
        "CERTCTL_AUDIT_FLUSH_TIMEOUT",
        _D,
        timedelta(seconds=30),
        roles=_SERVER,
        section=Section.LISTENER,
        doc="How long shutdown waits to flush buffered audit events. *duration*",
    )
    server_read_timeout: timedelta = setting(
        "CERTCTL_SERVER_READ_TIMEOUT",
        _D,
        timedelta(seconds=30),
        roles=_SERVER,
        section=Section.LISTENER,
        minimum=_1S,
        doc="A connection that has not sent a complete request head (or body chunk) within "
        "this time is closed. *duration*",
    )
    server_idle_timeout: timedelta = setting(
        "CERTCTL_SERVER_IDLE_TIMEOUT",
        _D,
        timedelta(seconds=60),
        roles=_SERVER,
        section=Section.LISTENER,
        minimum=_1S,
        doc="An idle keep-alive connection is closed after this time. *duration*",
    )
    database_url: str | None = setting(
        "CERTCTL_DATABASE_URL",
        parse_str,
        None,
        roles=_SERVER,
        section=Section.DATABASE,
        secret=True,
        doc="`postgresql://user:password@host:5432/certctl`. Its password is redacted and "
        "refused if it is an example value.",
        default_doc="unset (embedded PostgreSQL in the data dir)",
    )
    database_max_conns: int = setting(
        "CERTCTL_DATABASE_MAX_CONNS",
        parse_int,
        25,
        roles=_SERVER,
        section=Section.DATABASE,
        doc="Connection pool size. Must be 1 or more (`DatabaseMaxConnsInvalid`).",
    )
    log_level: LogLevel = setting(
        "CERTCTL_LOG_LEVEL",
        enum_parser(LogLevel),
        LogLevel.INFO,
        roles=_BOTH,
        section=Section.LOGGING,
        doc="`debug`, `info`, `warning` or `error`.",
    )
    log_format: LogFormat = setting(
        "CERTCTL_LOG_FORMAT",
        enum_parser(LogFormat),
        LogFormat.JSON,
        roles=_BOTH,
        section=Section.LOGGING,
        doc="`json` (one object per line) or `console` (for people).",
    )
    auth_type: str = setting(
        "CERTCTL_AUTH_TYPE",
        parse_auth_type,
        AuthType.API_KEY.value,
        roles=_SERVER,
        section=Section.AUTH,
        doc="`api-key` or `none`. `none` is refused on a non-loopback host unless demo mode "
        "is acknowledged (`InsecureAuthExposure`). `jwt` and anything else are refused "
        "(`UnknownAuthType`): put an authenticating gateway in front instead.",
    )
    api_keys: tuple[APIKey, ...] = setting(
        "CERTCTL_API_KEYS",
        parse_api_keys,
        (),
        roles=_SERVER,
        section=Section.AUTH,
        secret=True,
        doc="Operator keys, `name:key[:role],...` with the role `viewer` (reads), `operator` "
        "(the certificate lifecycle: create, update, archive, renew, deploy, revoke; cancel "
        "jobs) or `admin` (also issuers, targets, profiles, policies, owners and teams, agent "
        "retirement, approvals); without a role, `operator`. Names use letters, digits, `-`, "
        "`_`. A name may appear twice (with the same role) during a rotation. The name is "
        "what the audit records and what the two-person rule compares: a job's requester "
        "cannot approve it. Required when the auth type is `api-key` (`APIKeysRequired`). "
        "See [security.md](security.md).",
    )
    agent_bootstrap_token: str = setting(
        "CERTCTL_AGENT_BOOTSTRAP_TOKEN",
        parse_str,
        "",
        roles=_BOTH,
        section=Section.AUTH,
        secret=True,
        doc="Token agents present to register; the server accepts registrations with it.",
    )
    agent_bootstrap_token_deny_empty: bool = setting(
        "CERTCTL_AGENT_BOOTSTRAP_TOKEN_DENY_EMPTY",
        parse_bool,
        True,
        roles=_SERVER,
        section=Section.AUTH,
        doc="Refuse to start with an empty bootstrap token (`AgentBootstrapTokenRequired`). "
        "Secure by default; only set `false` if registration is closed another way.",
    )
    cors_origins: tuple[str, ...] = setting(
        "CERTCTL_CORS_ORIGINS",
        parse_list,
        (),
        roles=_SERVER,
        section=Section.AUTH,
        doc="*list* of origins allowed to call the API from a browser. `*` is refused "
        "(`CORSWildcard`).",
        default_doc="unset (same origin only)",
    )
    rate_limit_enabled: bool = setting(
        "CERTCTL_RATE_LIMIT_ENABLED",
        parse_bool,
        True,
        roles=_SERVER,
        section=Section.AUTH,
        doc="Per-key rate limiting (429 with `Retry-After`). *bool*",
    )
    rate_limit_rps: int = setting(
        "CERTCTL_RATE_LIMIT_RPS",
        parse_int,
        50,
        roles=_SERVER,
        section=Section.AUTH,
        doc="Sustained requests per second per key. *integer* ≥ 1 (`LimitInvalid`)",
    )
    rate_limit_burst: int = setting(
        "CERTCTL_RATE_LIMIT_BURST",
        parse_int,
        100,
        roles=_SERVER,
        section=Section.AUTH,
        doc="Burst size per key. *integer* ≥ 1 (`LimitInvalid`)",
    )
    auth_failures_per_minute: int = setting(
        "CERTCTL_AUTH_FAILURES_PER_MINUTE",
        parse_int,
        10,
        roles=_SERVER,
        section=Section.AUTH,
        doc="Failed authentications one client address may make per minute, after its "
        "burst; beyond it, 429 with `Retry-After` before any database work, unless the "
        "request's own credential checks out in memory. *integer* ≥ 1 (`LimitInvalid`)",
    )
    auth_failure_burst: int = setting(
        "CERTCTL_AUTH_FAILURE_BURST",
        parse_int,
        20,
        roles=_SERVER,
        section=Section.AUTH,
        doc="Failed authentications one client address may make at once. Failures are "
        "audited as one `auth_failed` row per address and minute, with the counts. "
        "*integer* ≥ 1 (`LimitInvalid`)",
    )
    config_encryption_key: str = setting(
        "CERTCTL_CONFIG_ENCRYPTION_KEY",
        parse_str,
        "",
        roles=_SERVER,
        section=Section.SECRETS,
        secret=True,
        doc="Passphrase from which the AES-256-GCM key for issuer/target secrets and the "
        "local CA key is derived. Required by the server, at least 32 bytes "
        "(`EncryptionKeyTooShort`). Generate with `openssl rand -base64 32`.",
    )
    ca_cert_path: Path | None = setting(
        "CERTCTL_CA_CERT_PATH",
        parse_path,
        None,
        roles=_SERVER,
        section=Section.SECRETS,
        doc="Sub-CA mode of the default issuer `iss-local`: the operator's CA certificate. "
        "Other issuers keep their own CA in the data dir (generated, or imported with "
        "`certctl issuer import-ca`); CA paths are never taken from the API. *path*",
        default_doc="unset (self-signed root in the data dir)",
    )
    ca_key_path: Path | None = setting(
        "CERTCTL_CA_KEY_PATH",
        parse_path,
        None,
        roles=_SERVER,
        section=Section.SECRETS,
        doc="Sub-CA mode of `iss-local`: the CA's private key. *path*",
    )
    acme_insecure: bool = setting(
        "CERTCTL_ACME_INSECURE",
        parse_bool,
        False,
        roles=_SERVER,
        section=Section.INSECURE,
        doc="Skip TLS verification of the ACME directory. Refused unless "
        "`CERTCTL_ACME_INSECURE_ACK=true` (`ACMEInsecureWithoutAck`).",
    )
    acme_insecure_ack: bool = setting(
        "CERTCTL_ACME_INSECURE_ACK",
        parse_bool,
        False,
        roles=_SERVER,
        section=Section.INSECURE,
        doc="Acknowledges `CERTCTL_ACME_INSECURE`. Set alone it is refused too, so a stale "
        "acknowledgement cannot linger.",
    )
    demo_mode_ack: bool = setting(
        "CERTCTL_DEMO_MODE_ACK",
        parse_bool,
        False,
        roles=_BOTH,
        section=Section.INSECURE,
        doc="Turns on demo mode (example credentials accepted, `none` auth allowed off "
        "loopback). Needs a fresh `CERTCTL_DEMO_MODE_ACK_TS` (`DemoModeAckExpired`).",
    )
    demo_mode_ack_ts: int | None = setting(
        "CERTCTL_DEMO_MODE_ACK_TS",
        parse_int,
        None,
        roles=_BOTH,
        section=Section.INSECURE,
        doc="Unix time of the demo acknowledgement: within the last 24 hours and at most one "
        "minute ahead. A forgotten demo refuses to restart the next day. *integer*",
    )
    renewal_check_interval: timedelta = setting(
        "CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL",
        _D,
        timedelta(hours=1),
        roles=_SERVER,
        section=Section.SCHEDULER,
        minimum=timedelta(minutes=1),
        doc="How often certificates are checked for due renewals.",
    )
    job_processor_interval: timedelta = setting(
        "CERTCTL_SCHEDULER_JOB_PROCESSOR_INTERVAL",
        _D,
        timedelta(seconds=30),
        roles=_SERVER,
        section=Section.SCHEDULER,
        minimum=_1S,
        doc="How often pending server-side jobs are claimed.",
    )
    agent_health_check_interval: timedelta = setting(
        "CERTCTL_SCHEDULER_AGENT_HEALTH_CHECK_INTERVAL",
        _D,
        timedelta(minutes=2),
        roles=_SERVER,
        section=Section.SCHEDULER,
        minimum=_1S,
        doc="How often agent liveness is recomputed.",
    )
    retry_interval: timedelta = setting(
        "CERTCTL_SCHEDULER_RETRY_INTERVAL",
        _D,
        timedelta(minutes=5),
        roles=_SERVER,
        section=Section.SCHEDULER,
        minimum=_1S,
        doc="Base delay of a failed job's first retry (later retries back off exponentially).",
    )
    job_timeout_interval: timedelta = setting(
        "CERTCTL_JOB_TIMEOUT_INTERVAL",
        _D,
        timedelta(minutes=10),
        roles=_SERVER,
        section=Section.SCHEDULER,
        minimum=_1S,
        doc="How often stale jobs are reaped.",
    )
    job_awaiting_csr_timeout: timedelta = setting(
        "CERTCTL_JOB_AWAITING_CSR_TIMEOUT",
        _D,
        timedelta(hours=24),
        roles=_SERVER,
        section=Section.SCHEDULER,
        minimum=_1S,
        doc="A job waiting this long for an agent's CSR fails.",
    )
    job_awaiting_approval_timeout: timedelta = setting(
        "CERTCTL_JOB_AWAITING_APPROVAL_TIMEOUT",
        _D,
        timedelta(hours=168),
        roles=_SERVER,
        section=Section.SCHEDULER,
        minimum=_1S,
        doc="A job waiting this long for approval fails.",
    )
    agent_offline_after: timedelta = setting(
        "CERTCTL_AGENT_OFFLINE_AFTER",
        _D,
        timedelta(minutes=5),
        roles=_SERVER,
        section=Section.SCHEDULER,
        minimum=_1S,
        doc="An agent silent this long is Offline and its running jobs fail.",
    )
    agent_poll_wait_max: timedelta = setting(
        "CERTCTL_AGENT_POLL_WAIT_MAX",
        _D,
        timedelta(seconds=55),
        roles=_SERVER,
        section=Section.SCHEDULER,
        doc="Longest an agent's work poll is held open waiting for work (the long poll; "
        "`0s` answers every poll at once). Below `CERTCTL_AGENT_OFFLINE_AFTER` "
        "(`LimitInvalid`), and below the idle timeout of any proxy in front of the server.",
    )
    max_waiting_agents: int = setting(
        "CERTCTL_MAX_WAITING_AGENTS",
        parse_int,
        20_000,
        roles=_SERVER,
        section=Section.SCHEDULER,
        doc="Long polls one replica holds at once, shared among its workers; polls beyond "
        "it are answered at once and those agents poll on their interval. *integer* ≥ 1 "
        "(`LimitInvalid`)",
    )
    deploy_backup_retention: int = setting(
        "CERTCTL_DEPLOY_BACKUP_RETENTION",
        parse_int,
        3,
        roles=_AGENT,
        section=Section.DEPLOY,
        doc="Backups kept per deployed file; `-1` keeps none. *integer*",
    )
    verify_deployment: bool = setting(
        "CERTCTL_VERIFY_DEPLOYMENT",
        parse_bool,
        True,
        roles=_AGENT,
        section=Section.DEPLOY,
        doc="Verify every deploy with a TLS handshake and roll back on mismatch. *bool*",
    )
    verify_timeout: timedelta = setting(
        "CERTCTL_VERIFY_TIMEOUT",
        _D,
        timedelta(seconds=10),
        roles=_AGENT,
        section=Section.DEPLOY,
        doc="Timeout of one verification handshake. *duration*",
    )
    server_url: str = setting(
        "CERTCTL_SERVER_URL",
        str.strip,
        "https://localhost:8443",
        roles=_AGENT,
        section=Section.AGENT,
        doc="Control-plane URL; must be `https://`.",
    )
    server_ca_bundle_path: Path | None = setting(
        "CERTCTL_SERVER_CA_BUNDLE_PATH",
        parse_path,
        None,
        roles=_AGENT,
        section=Section.AGENT,
        doc="CA bundle the agent trusts for the control plane. *path*",
        default_doc="unset (system trust store)",
    )
    server_tls_insecure_skip_verify: bool = setting(
        "CERTCTL_SERVER_TLS_INSECURE_SKIP_VERIFY",
        parse_bool,
        False,
        roles=_AGENT,
        section=Section.AGENT,
        doc="Development only: skip verification of the control plane's certificate, with a "
        "warning on every start. *bool*",
    )
    agent_name: str | None = setting(
        "CERTCTL_AGENT_NAME",
        str.strip,
        None,
        roles=_AGENT,
        section=Section.AGENT,
        doc="Name the agent registers under.",
        default_doc="the host name",
    )
    agent_state_dir: Path | None = setting(
        "CERTCTL_AGENT_STATE_DIR",
        parse_path,
        None,
        roles=_AGENT,
        section=Section.AGENT,
        doc="Agent id, agent key (0600) and private keys (0600), in a 0700 directory. *path*",
        default_doc="`$CERTCTL_DATA_DIR/agent`",
    )
    agent_policy_file: Path | None = setting(
        "CERTCTL_AGENT_POLICY_FILE",
        parse_path,
        None,
        roles=_AGENT,
        section=Section.AGENT,
        doc="The host policy (TOML): which paths the agent may write, which commands it may "
        "run, with which owners and modes, per connector type. Must be a regular file owned "
        "by root (or the agent's user), not writable by group or others, in a directory "
        "others cannot write; otherwise the agent refuses to start (exit 2). Without it, the "
        "built-in policy of [agent.md](agent.md#host-policy) applies. *path*",
        default_doc="unset (the built-in policy)",
    )
    agent_poll_interval: timedelta = setting(
        "CERTCTL_AGENT_POLL_INTERVAL",
        _D,
        timedelta(seconds=30),
        roles=_AGENT,
        section=Section.AGENT,
        minimum=_1S,
        doc="How often the agent asks for work when the server answers at once (a short "
        "poll), and the pause after a poll whose work failed.",
    )
    agent_poll_wait: timedelta = setting(
        "CERTCTL_AGENT_POLL_WAIT",
        _D,
        timedelta(seconds=55),
        roles=_AGENT,
        section=Section.AGENT,
        doc="How long the agent asks the server to hold each work poll until work appears "
        "(the server may grant less). While the server holds its polls they are the "
        "heartbeat; `0s` uses short polls and heartbeats, as agents before 1.1 did.",
    )
    agent_heartbeat_interval: timedelta = setting(
        "CERTCTL_AGENT_HEARTBEAT_INTERVAL",
        _D,
        timedelta(seconds=60),
        roles=_AGENT,
        section=Section.AGENT,
        minimum=_1S,
        doc="How often the agent reports it is alive while it short-polls.",
    )

    @property
    def effective_data_dir(self) -> Path:
        return self.data_dir or default_data_dir()

    @property
    def effective_agent_state_dir(self) -> Path:
        return self.agent_state_dir or self.effective_data_dir / "agent"


# Field name -> declaration, in declaration order; a field without ``setting`` fails here.
SPECS: dict[str, Var] = {f.name: f.metadata[_VAR] for f in fields(Settings)}


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every ``CERTCTL_*`` variable; an empty value counts as unset.

    Raises ``ConfigParseError`` for the first variable (in declaration order) whose value
    does not parse, so the operator fixes one line at a time with a precise message.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, spec in SPECS.items():
        raw = env.get(spec.env, "")
        if raw == "":
            continue
        try:
            values[name] = spec.parse(raw)
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
