"""`certctl agent` as an operator (or systemd) runs it: a real subprocess, exit codes, one line.

What happens after a successful start (retirement, SIGTERM, job results) is covered in
``test_agent_runner`` through ``certctl.agent.process.run``, which this command calls.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from certctl.testing.policy import allowing, write_policy


def certctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}
    return subprocess.run(
        [sys.executable, "-m", "certctl", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port that would accept the agent's connection, to prove none was made."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        yield sock


def accepted_any(sock: socket.socket) -> bool:
    try:
        connection, _ = sock.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


@pytest.mark.parametrize("flag", [[], ["--dry-run"]])
def test_an_http_url_exits_2_before_connecting(
    listener: socket.socket, tmp_path: Path, flag: list[str]
) -> None:
    port = listener.getsockname()[1]
    result = certctl(
        "agent",
        *flag,
        env={
            "CERTCTL_SERVER_URL": f"http://127.0.0.1:{port}",
            "CERTCTL_AGENT_STATE_DIR": str(tmp_path / "state"),
            "CERTCTL_AGENT_BOOTSTRAP_TOKEN": "a-real-token-from-the-server",
        },
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(
        f"certctl: CERTCTL_SERVER_URL='http://127.0.0.1:{port}' uses plaintext http://"
    )
    assert f"change it to https://127.0.0.1:{port}." in result.stderr
    assert not accepted_any(listener)
    assert not (tmp_path / "state").exists()


def test_an_unreadable_ca_bundle_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = certctl(
        "agent",
        "--once",
        env={
            "CERTCTL_SERVER_CA_BUNDLE_PATH": str(tmp_path / "missing.pem"),
            "CERTCTL_AGENT_STATE_DIR": str(tmp_path / "state"),
        },
    )
    assert result.returncode == 2
    assert result.stderr.startswith("certctl: CERTCTL_SERVER_CA_BUNDLE_PATH=")
    assert result.stderr.strip().count("\n") == 0


def test_a_value_that_does_not_parse_exits_2(tmp_path: Path) -> None:
    env_file = tmp_path / "agent.env"
    env_file.write_text("CERTCTL_AGENT_POLL_INTERVAL=often\n")
    result = certctl("agent", "--env-file", str(env_file), env={})
    assert result.returncode == 2
    assert result.stderr.startswith("certctl: CERTCTL_AGENT_POLL_INTERVAL='often' does not parse")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["agent", "--once", "--dry-run"], "--once and --dry-run exclude each other"),
        (["agent", "--once", "validate-target", "--type", "file", "--config", "x"], "drop --once"),
    ],
)
def test_conflicting_options_are_usage_errors(args: list[str], message: str) -> None:
    result = certctl(*args, env={})
    assert result.returncode == 2
    assert message in result.stderr


def test_validate_target_is_still_a_subcommand(tmp_path: Path) -> None:
    config = tmp_path / "target.json"
    live = tmp_path / "live"
    config.write_text(f'{{"cert_path": "{live}/cert.pem", "key_path": "{live}/key.pem"}}')
    argv = ("agent", "validate-target", "--type", "file", "--config", str(config))
    refused = certctl(*argv, env={})
    assert refused.returncode == 1, refused.stderr
    assert "outside connectors.file.write_roots (/etc/ssl/certctl)" in refused.stderr
    policy = write_policy(tmp_path / "policy" / "agent.toml", allowing([live]))
    result = certctl(*argv, env={"CERTCTL_AGENT_POLICY_FILE": str(policy)})
    assert result.returncode == 0, result.stderr
    assert "File target config is valid and the dry run passed" in result.stdout
    assert not live.exists()
