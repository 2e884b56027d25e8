"""`certctl config check` and `config init` as an operator runs them: a real subprocess."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path


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
        secret = line.split("=", 1)[1].split(":")[-2 if line.startswith("CERTCTL_API_KEYS") else -1]
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
