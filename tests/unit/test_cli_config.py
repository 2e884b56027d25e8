"""`certctl config check` and `config init` as an operator runs them: a real subprocess."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certctl.config import SPECS, Role
from certctl.testing.material import ScratchCA

SECRET = {spec.env: spec.secret for spec in SPECS.values()}
# What the server needs besides TLS material; never real secrets.
SERVER_SECRETS = {
    "CERTCTL_API_KEYS": "ops:k3y-9f8a7b6c5d4e3f2a1b0c:admin",
    "CERTCTL_AGENT_BOOTSTRAP_TOKEN": "bt-6a5b4c3d2e1f0a9b8c7d",
    "CERTCTL_CONFIG_ENCRYPTION_KEY": "q" * 32,
}


def certctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}
    return subprocess.run(
        [sys.executable, "-m", "certctl", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_acme_insecure_without_ack_exits_2_naming_the_ack() -> None:
    result = certctl("config", "check", env={"CERTCTL_ACME_INSECURE": "true"})
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "CERTCTL_ACME_INSECURE_ACK" in last


def test_unparseable_port_exits_2_naming_the_variable() -> None:
    result = certctl("config", "check", env={"CERTCTL_SERVER_PORT": "abc"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "CERTCTL_SERVER_PORT" in result.stderr


def test_init_writes_a_private_file_that_passes_check(tmp_path: Path) -> None:
    env_file = tmp_path / "certctl.env"
    assert certctl("config", "init", "--out", str(env_file)).returncode == 0
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

    result = certctl("config", "check", "--env-file", str(env_file))
    assert result.returncode == 0, result.stderr
    for line in env_file.read_text().splitlines()[1:]:
        env, value = line.split("=", 1)
        if not SECRET[env]:  # the TLS paths are shown, as every path is
            continue
        secret = value.split(":")[-2 if env == "CERTCTL_API_KEYS" else -1]
        assert secret not in result.stdout
    assert "CERTCTL_SERVER_PORT=8443  # default" in result.stdout


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    env_file = tmp_path / "certctl.env"
    env_file.write_text("keep me\n")
    result = certctl("config", "init", "--out", str(env_file))
    assert result.returncode == 1
    assert env_file.read_text() == "keep me\n"


def test_environment_overrides_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "certctl.env"
    certctl("config", "init", "--out", str(env_file))
    result = certctl(
        "config", "check", "--env-file", str(env_file), env={"CERTCTL_CORS_ORIGINS": "*"}
    )
    assert result.returncode == 2
    assert "CERTCTL_CORS_ORIGINS" in result.stderr


# ---- config check shows and validates exactly what one role starts with


def shown_variables(stdout: str) -> set[str]:
    return {line.split("=", 1)[0] for line in stdout.splitlines() if "=" in line}


def only(role: Role) -> set[str]:
    return {spec.env for spec in SPECS.values() if spec.roles == {role}}


@pytest.mark.parametrize(("role", "other"), [(Role.AGENT, Role.SERVER), (Role.SERVER, Role.AGENT)])
def test_check_shows_every_variable_of_its_role_and_none_of_the_other(
    role: Role, other: Role
) -> None:
    result = certctl("config", "check", "--role", role.value)
    shown = shown_variables(result.stdout)
    assert shown == {spec.env for spec in SPECS.values() if role in spec.roles}
    assert not shown & only(other)


def test_agent_check_ignores_a_server_only_floor() -> None:
    # The server refuses this interval; the agent never reads it.
    result = certctl(
        "config",
        "check",
        "--role",
        "agent",
        env={"CERTCTL_SCHEDULER_JOB_PROCESSOR_INTERVAL": "10ms", **SERVER_SECRETS},
    )
    assert result.returncode == 0, result.stderr
    assert "configuration is valid for the agent" in result.stderr


def write_pair(directory: Path, *, name: str = "localhost", expired: bool = False) -> list[str]:
    material = ScratchCA(now=datetime.now(UTC)).issue(name, expired=expired)
    directory.mkdir(exist_ok=True)
    cert, key = directory / "server.pem", directory / "server-key.pem"
    cert.write_bytes(material.fullchain)
    key.write_bytes(material.key_pem)
    return [str(cert), str(key)]


def tls_env(cert: str | None, key: str | None, host: str = "localhost") -> dict[str, str]:
    paths = {"CERTCTL_SERVER_TLS_CERT_PATH": cert, "CERTCTL_SERVER_TLS_KEY_PATH": key}
    given = {env: path for env, path in paths.items() if path is not None}
    return {**SERVER_SECRETS, "CERTCTL_SERVER_HOST": host, **given}


def test_server_check_passes_with_usable_tls_material(tmp_path: Path) -> None:
    result = certctl("config", "check", "--role", "server", env=tls_env(*write_pair(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "configuration is valid for the server" in result.stderr


def _unset(tmp_path: Path) -> dict[str, str]:
    return tls_env(None, None)


def _missing(tmp_path: Path) -> dict[str, str]:
    return tls_env(str(tmp_path / "nope.pem"), str(tmp_path / "nope-key.pem"))


def _unparsable(tmp_path: Path) -> dict[str, str]:
    cert, key = write_pair(tmp_path)
    Path(cert).write_text("not a certificate\n")
    return tls_env(cert, key)


def _mismatched(tmp_path: Path) -> dict[str, str]:
    cert, _ = write_pair(tmp_path / "one")
    _, key = write_pair(tmp_path / "two")
    return tls_env(cert, key)


def _expired(tmp_path: Path) -> dict[str, str]:
    return tls_env(*write_pair(tmp_path, expired=True))


def _other_host(tmp_path: Path) -> dict[str, str]:
    return tls_env(*write_pair(tmp_path, name="other.example"))


@pytest.mark.parametrize(
    ("broken", "variable"),
    [
        (_unset, "CERTCTL_SERVER_TLS_CERT_PATH"),
        (_missing, "CERTCTL_SERVER_TLS_CERT_PATH"),
        (_unparsable, "CERTCTL_SERVER_TLS_CERT_PATH"),
        (_mismatched, "CERTCTL_SERVER_TLS_KEY_PATH"),
        (_expired, "CERTCTL_SERVER_TLS_CERT_PATH"),
        (_other_host, "CERTCTL_SERVER_HOST"),
    ],
)
def test_server_check_refuses_what_the_server_would_refuse(
    tmp_path: Path, broken: Callable[[Path], dict[str, str]], variable: str
) -> None:
    result = certctl("config", "check", "--role", "server", env=broken(tmp_path))
    assert result.returncode == 2
    assert "configuration is valid" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert variable in last


def test_server_check_refuses_zero_workers(tmp_path: Path) -> None:
    env = {**tls_env(*write_pair(tmp_path)), "CERTCTL_SERVER_WORKERS": "0"}
    result = certctl("config", "check", "--role", "server", env=env)
    assert result.returncode == 2
    assert "CERTCTL_SERVER_WORKERS" in result.stderr
