"""Strict parsing and the fail-closed refusals of certctl.config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certctl import config
from certctl.config import Role
from certctl.core.errors import CertctlError
from certctl.core.model import KeyRole

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

VALID: dict[str, str] = {
    "CERTCTL_API_KEYS": "ops:k3y-9f8a7b6c5d4e3f2a1b0c:admin",
    "CERTCTL_AGENT_BOOTSTRAP_TOKEN": "bt-6a5b4c3d2e1f0a9b8c7d",
    "CERTCTL_CONFIG_ENCRYPTION_KEY": "q" * 32,
}


def settings(**overrides: str) -> config.Settings:
    return config.load({**VALID, **overrides})


def refusal(role: Role = Role.SERVER, **overrides: str) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as info:
        config.validate(settings(**overrides), role=role, now=NOW)
    return info.value


def test_valid_configuration_passes_for_server_and_agent() -> None:
    config.validate(settings(), role=Role.SERVER, now=NOW)
    config.validate(settings(), role=Role.AGENT, now=NOW)


def test_defaults_when_unset_or_empty() -> None:
    s = config.load({"CERTCTL_SERVER_PORT": ""})
    assert s.server_port == 8443
    assert s.agent_bootstrap_token_deny_empty is True
    assert s.renewal_check_interval == timedelta(hours=1)
    assert s.database_url is None


@pytest.mark.parametrize(
    ("env", "raw"),
    [
        ("CERTCTL_SERVER_PORT", "abc"),
        ("CERTCTL_SERVER_PORT", "0"),
        ("CERTCTL_SERVER_PORT", "70000"),
        ("CERTCTL_DATABASE_MAX_CONNS", "2.5"),
        ("CERTCTL_RATE_LIMIT_ENABLED", "maybe"),
        ("CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL", "10"),
        ("CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL", "1h junk"),
        ("CERTCTL_LOG_LEVEL", "loud"),
        ("CERTCTL_LOG_FORMAT", "text"),
        ("CERTCTL_DEMO_MODE_ACK_TS", "yesterday"),
        ("CERTCTL_API_KEYS", "no-colon"),
        ("CERTCTL_API_KEYS", "bad name:key"),
        ("CERTCTL_API_KEYS", "ops:key:root"),
        ("CERTCTL_API_KEYS", "ops:key,ops:key"),
        ("CERTCTL_API_KEYS", "ops:key1:admin,ops:key2"),
        ("CERTCTL_API_KEYS", "ops:key1:viewer,ops:key2:operator"),
        ("CERTCTL_API_KEYS", "ops:key:Admin"),
    ],
)
def test_unparseable_value_is_an_error_naming_the_variable(env: str, raw: str) -> None:
    with pytest.raises(config.ConfigParseError) as info:
        config.load({env: raw})
    assert info.value.variable == env
    assert str(info.value).startswith(env)


def test_secret_parse_error_does_not_echo_the_value() -> None:
    with pytest.raises(config.ConfigParseError) as info:
        config.load({"CERTCTL_API_KEYS": "ops:s3cret-value:root"})
    assert "s3cret-value" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("7d", 604800), ("1.5h", 5400)],
)
def test_durations(raw: str, seconds: float) -> None:
    assert config.parse_duration(raw).total_seconds() == seconds


def test_api_key_rotation_allows_two_keys_per_name() -> None:
    keys = config.parse_api_keys("ops:old:admin, ops:new:admin ,ci:k")
    assert [(k.name, k.key, k.role) for k in keys] == [
        ("ops", "old", KeyRole.ADMIN),
        ("ops", "new", KeyRole.ADMIN),
        ("ci", "k", KeyRole.OPERATOR),
    ]


def test_api_key_roles_and_the_default() -> None:
    keys = config.parse_api_keys("a:1:viewer,b:2:operator,c:3:admin,d:4")
    assert [k.role for k in keys] == [
        KeyRole.VIEWER,
        KeyRole.OPERATOR,
        KeyRole.ADMIN,
        KeyRole.OPERATOR,
    ]


# ---- one test per sentinel: class and the variable named in the message


def test_bootstrap_token_required_by_default() -> None:
    err = refusal(CERTCTL_AGENT_BOOTSTRAP_TOKEN="")
    assert type(err) is config.AgentBootstrapTokenRequired
    assert "CERTCTL_AGENT_BOOTSTRAP_TOKEN" in str(err)


def test_bootstrap_token_may_be_empty_when_deny_empty_is_off() -> None:
    s = settings(CERTCTL_AGENT_BOOTSTRAP_TOKEN="", CERTCTL_AGENT_BOOTSTRAP_TOKEN_DENY_EMPTY="false")
    config.validate(s, role=Role.SERVER, now=NOW)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"CERTCTL_ACME_INSECURE": "true"}, "CERTCTL_ACME_INSECURE_ACK"),
        ({"CERTCTL_ACME_INSECURE_ACK": "true"}, "CERTCTL_ACME_INSECURE"),
    ],
)
def test_acme_insecure_needs_both_flags(overrides: dict[str, str], named: str) -> None:
    err = refusal(**overrides)
    assert type(err) is config.ACMEInsecureWithoutAck
    assert err.variable == named
    assert named in str(err)


def test_acme_insecure_with_ack_passes() -> None:
    s = settings(CERTCTL_ACME_INSECURE="true", CERTCTL_ACME_INSECURE_ACK="true")
    config.validate(s, role=Role.SERVER, now=NOW)


def _ts(delta: timedelta) -> str:
    return str(int((NOW + delta).timestamp()))


@pytest.mark.parametrize(
    "ts",
    [None, _ts(-timedelta(hours=24, seconds=1)), _ts(timedelta(minutes=1, seconds=1))],
)
def test_demo_ack_needs_a_fresh_timestamp(ts: str | None) -> None:
    overrides = {"CERTCTL_DEMO_MODE_ACK": "true"}
    if ts is not None:
        overrides["CERTCTL_DEMO_MODE_ACK_TS"] = ts
    err = refusal(**overrides)
    assert type(err) is config.DemoModeAckExpired
    assert "CERTCTL_DEMO_MODE_ACK_TS" in str(err)


@pytest.mark.parametrize("delta", [timedelta(hours=-23, minutes=-59), timedelta(seconds=59)])
def test_demo_ack_within_window_passes(delta: timedelta) -> None:
    s = settings(CERTCTL_DEMO_MODE_ACK="true", CERTCTL_DEMO_MODE_ACK_TS=_ts(delta))
    config.validate(s, role=Role.SERVER, now=NOW)
    assert config.demo_mode(s, NOW)


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("CERTCTL_API_KEYS", "ops:change-me-now"),
        ("CERTCTL_API_KEYS", "ops:example-api-key:admin"),
        ("CERTCTL_AGENT_BOOTSTRAP_TOKEN", "example-bootstrap-token"),
        ("CERTCTL_CONFIG_ENCRYPTION_KEY", "change-me-32-char-encryption-key"),
        ("CERTCTL_DATABASE_URL", "postgresql://certctl:postgres@db:5432/certctl"),
    ],
)
def test_placeholder_credentials_refused_outside_demo(env: str, value: str) -> None:
    err = refusal(**{env: value})
    assert type(err) is config.PlaceholderCredential
    assert err.variable == env
    assert env in str(err)
    assert value not in str(err)


def test_placeholder_credentials_accepted_in_demo_mode() -> None:
    s = settings(
        CERTCTL_AGENT_BOOTSTRAP_TOKEN="change-me-demo",
        CERTCTL_DEMO_MODE_ACK="true",
        CERTCTL_DEMO_MODE_ACK_TS=_ts(timedelta(0)),
    )
    config.validate(s, role=Role.SERVER, now=NOW)


def test_agent_refuses_placeholder_bootstrap_token() -> None:
    err = refusal(Role.AGENT, CERTCTL_AGENT_BOOTSTRAP_TOKEN="change-me")
    assert type(err) is config.PlaceholderCredential


def test_auth_none_on_public_bind_refused() -> None:
    err = refusal(CERTCTL_AUTH_TYPE="none", CERTCTL_SERVER_HOST="0.0.0.0")
    assert type(err) is config.InsecureAuthExposure
    assert "CERTCTL_AUTH_TYPE" in str(err)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_auth_none_on_loopback_passes(host: str) -> None:
    s = settings(CERTCTL_AUTH_TYPE="none", CERTCTL_SERVER_HOST=host, CERTCTL_API_KEYS="")
    config.validate(s, role=Role.SERVER, now=NOW)


def test_auth_none_on_public_bind_allowed_with_demo_ack() -> None:
    s = settings(
        CERTCTL_AUTH_TYPE="none",
        CERTCTL_SERVER_HOST="0.0.0.0",
        CERTCTL_DEMO_MODE_ACK="true",
        CERTCTL_DEMO_MODE_ACK_TS=_ts(timedelta(0)),
    )
    config.validate(s, role=Role.SERVER, now=NOW)


def test_cors_wildcard_refused() -> None:
    err = refusal(CERTCTL_CORS_ORIGINS="https://a.example, *")
    assert type(err) is config.CORSWildcard
    assert "CERTCTL_CORS_ORIGINS" in str(err)


@pytest.mark.parametrize("key", ["", "x" * 31])
def test_short_encryption_key_refused(key: str) -> None:
    err = refusal(CERTCTL_CONFIG_ENCRYPTION_KEY=key)
    assert type(err) is config.EncryptionKeyTooShort
    assert "CERTCTL_CONFIG_ENCRYPTION_KEY" in str(err)


def test_database_max_conns_below_one_refused() -> None:
    err = refusal(CERTCTL_DATABASE_MAX_CONNS="0")
    assert type(err) is config.DatabaseMaxConnsInvalid
    assert "CERTCTL_DATABASE_MAX_CONNS" in str(err)


@pytest.mark.parametrize(
    ("role", "env", "value"),
    [
        (Role.SERVER, "CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL", "59s"),
        (Role.SERVER, "CERTCTL_SCHEDULER_JOB_PROCESSOR_INTERVAL", "500ms"),
        (Role.AGENT, "CERTCTL_AGENT_POLL_INTERVAL", "0s"),
    ],
)
def test_scheduler_interval_below_minimum_refused(role: Role, env: str, value: str) -> None:
    err = refusal(role, **{env: value})
    assert type(err) is config.SchedulerIntervalTooShort
    assert env in str(err)


@pytest.mark.parametrize("auth", ["jwt", "oidc"])
def test_unknown_auth_type_refused(auth: str) -> None:
    err = refusal(CERTCTL_AUTH_TYPE=auth)
    assert type(err) is config.UnknownAuthType
    assert "CERTCTL_AUTH_TYPE" in str(err)


def test_jwt_points_to_a_gateway() -> None:
    assert "gateway" in str(refusal(CERTCTL_AUTH_TYPE="jwt"))


def test_api_keys_required_for_api_key_auth() -> None:
    err = refusal(CERTCTL_API_KEYS="")
    assert type(err) is config.APIKeysRequired
    assert "CERTCTL_API_KEYS" in str(err)


@pytest.mark.parametrize(
    ("role", "env", "value"),
    [
        (Role.AGENT, "CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL", "1s"),
        (Role.AGENT, "CERTCTL_ACME_INSECURE", "true"),
        (Role.AGENT, "CERTCTL_CORS_ORIGINS", "*"),
        (Role.SERVER, "CERTCTL_AGENT_HEARTBEAT_INTERVAL", "0s"),
    ],
)
def test_a_role_is_not_refused_for_a_variable_it_does_not_read(
    role: Role, env: str, value: str
) -> None:
    config.validate(settings(**{env: value}), role=role, now=NOW)


def test_zero_workers_refused() -> None:
    err = refusal(CERTCTL_SERVER_WORKERS="0")
    assert type(err) is config.WorkersInvalid
    assert "CERTCTL_SERVER_WORKERS" in str(err)


def test_every_setting_is_read_by_a_role_and_documented() -> None:
    for spec in config.SPECS.values():
        assert spec.roles, spec.env
        assert spec.doc.strip(), spec.env


def test_config_errors_are_certctl_errors() -> None:
    assert issubclass(config.ConfigError, CertctlError)


def test_sentinels_are_distinct_classes() -> None:
    sentinels = [
        config.AgentBootstrapTokenRequired,
        config.ACMEInsecureWithoutAck,
        config.DemoModeAckExpired,
        config.PlaceholderCredential,
        config.InsecureAuthExposure,
        config.CORSWildcard,
        config.EncryptionKeyTooShort,
        config.DatabaseMaxConnsInvalid,
        config.SchedulerIntervalTooShort,
        config.UnknownAuthType,
        config.WorkersInvalid,
    ]
    assert len(set(sentinels)) == len(sentinels)
    assert all(issubclass(s, config.ConfigError) for s in sentinels)


# ---- display and env files


def test_redacted_hides_every_secret() -> None:
    s = settings(CERTCTL_DATABASE_URL="postgresql://certctl:hunter2-xyz@db/certctl")
    shown = "\n".join(f"{env}={value}" for env, value, _ in config.redacted(s, Role.SERVER))
    for secret in ("k3y-9f8a7b6c5d4e3f2a1b0c", "bt-6a5b4c3d2e1f0a9b8c7d", "q" * 32, "hunter2-xyz"):
        assert secret not in shown
    assert "CERTCTL_API_KEYS=ops:<redacted>:admin" in shown
    assert "CERTCTL_DATABASE_URL=postgresql://certctl:<redacted>@db/certctl" in shown


@pytest.mark.parametrize("role", list(Role))
def test_redacted_shows_exactly_the_variables_of_the_role(role: Role) -> None:
    shown = {env for env, _, _ in config.redacted(settings(), role)}
    assert shown == {spec.env for spec in config.SPECS.values() if role in spec.roles}


@pytest.mark.parametrize(
    ("raw", "shown"), [("500ms", "500ms"), ("90s", "90s"), ("1h30m", "90m"), ("168h", "7d")]
)
def test_durations_are_shown_as_they_parse(raw: str, shown: str) -> None:
    assert config.format_duration(config.parse_duration(raw)) == shown
    assert config.parse_duration(shown) == config.parse_duration(raw)


def test_env_file_parsing(tmp_path: Path) -> None:
    path = tmp_path / "certctl.env"
    path.write_text("# comment\n\nexport CERTCTL_SERVER_PORT=9443\nCERTCTL_LOG_FORMAT='console'\n")
    assert config.read_env_file(path) == {
        "CERTCTL_SERVER_PORT": "9443",
        "CERTCTL_LOG_FORMAT": "console",
    }


def test_env_file_bad_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "certctl.env"
    path.write_text("CERTCTL_SERVER_PORT=9443\nthis is not an assignment\n")
    with pytest.raises(config.ConfigError, match=r"certctl\.env:2 "):
        config.read_env_file(path)
