"""`certctl agent install` as an operator runs it: the files it writes, and what it refuses.

Installs go into a temporary ``--prefix``; the written env file and policy are then read
by the agent's own loaders and by `certctl config check`, so "installed" means "accepted
by the agent", not merely "present".
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from certctl import config
from certctl.agent import install
from certctl.agent.policy import BUILT_IN, load_policy
from certctl.cli import main
from certctl.server.tls import init_tls

TOKEN = "Zq7-bootstrap-token-never-shown-8cF2"
URL = "https://certctl.example.com:8443"
REPO_UNIT = Path(__file__).parents[2] / "deploy/systemd/certctl-agent.service"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CERTCTL_* of the test process leaks in as a token or into `config check`."""
    for name in list(os.environ):
        if name.startswith("CERTCTL_"):
            monkeypatch.delenv(name)


def paths(root: Path) -> tuple[Path, Path, Path]:
    return (
        root / "etc/certctl/agent.env",
        root / "etc/certctl/agent-policy.toml",
        root / "etc/systemd/system/certctl-agent.service",
    )


def run(*args: str, token: str | None = TOKEN, stdin: str | None = None) -> Result:
    env = {} if token is None else {"CERTCTL_AGENT_BOOTSTRAP_TOKEN": token}
    return CliRunner().invoke(main, ["agent", "install", *args], env=env, input=stdin)


def installed(root: Path, *extra: str) -> Result:
    result = run("--server-url", URL, "--prefix", str(root), *extra)
    assert result.exit_code == 0, result.output
    return result


def test_dry_run_prints_every_file_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run("--server-url", URL, "--prefix", str(root), "--dry-run")

    assert result.exit_code == 0, result.output
    env, policy, unit = paths(root)
    for path, mode in ((env, "0600"), (policy, "0644"), (unit, "0644")):
        assert f"# would write {path} (mode {mode})" in result.stdout
    assert f"CERTCTL_SERVER_URL={URL}" in result.stdout
    assert "CERTCTL_AGENT_BOOTSTRAP_TOKEN=<redacted>" in result.stdout
    assert "[connectors.nginx]" in result.stdout
    assert REPO_UNIT.read_text() in result.stdout
    assert TOKEN not in result.output
    assert not root.exists()


def test_install_writes_the_files_with_their_modes_and_the_policy_loads(tmp_path: Path) -> None:
    result = installed(tmp_path)

    env, policy, unit = paths(tmp_path)
    for path, mode in ((env, 0o600), (policy, 0o644), (unit, 0o644)):
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == mode, path
        assert info.st_uid == os.geteuid()  # root here: the owner load_policy wants
        assert f"wrote {path} (mode {mode:04o})" in result.stdout
        # What lets load_policy trust the policy: no one else can replace it.
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert result.stdout.rstrip().endswith(install.NEXT_COMMAND)
    assert unit.read_bytes() == REPO_UNIT.read_bytes()
    loaded = load_policy(config.load({"CERTCTL_AGENT_POLICY_FILE": str(policy)}))
    assert loaded.source == policy
    assert dict(loaded.rules) == dict(BUILT_IN)
    assert TOKEN not in result.output


def test_the_env_file_holds_the_answers_and_passes_config_check(tmp_path: Path) -> None:
    bundle = init_tls(tmp_path / "tls", hosts=(), force=False, now=datetime.now(UTC)).ca_path
    installed(tmp_path / "root", "--ca-bundle", str(bundle), "--name", "web-01")
    env, policy, _ = paths(tmp_path / "root")

    assert config.read_env_file(env) == {
        "CERTCTL_SERVER_URL": URL,
        "CERTCTL_AGENT_BOOTSTRAP_TOKEN": TOKEN,
        "CERTCTL_SERVER_CA_BUNDLE_PATH": str(bundle),
        "CERTCTL_AGENT_NAME": "web-01",
    }
    # The unit points the agent at the policy file; here the variable does the same.
    check = CliRunner().invoke(
        main,
        ["config", "check", "--role", "agent", "--env-file", str(env)],
        env={"CERTCTL_AGENT_POLICY_FILE": str(policy)},
    )
    assert check.exit_code == 0, check.output
    assert "configuration is valid for the agent" in check.stderr
    assert TOKEN not in check.output


def test_the_name_defaults_to_the_host_name(tmp_path: Path) -> None:
    installed(tmp_path)
    values = config.read_env_file(paths(tmp_path)[0])
    assert values["CERTCTL_AGENT_NAME"] == os.uname().nodename
    assert "CERTCTL_SERVER_CA_BUNDLE_PATH" not in values


@pytest.mark.parametrize("source", ["variable", "option", "file", "prompt"])
def test_the_token_is_written_and_never_printed(tmp_path: Path, source: str) -> None:
    root = tmp_path / "root"
    args = ["--server-url", URL, "--prefix", str(root)]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    extra = {
        "variable": [],
        "option": ["--token", TOKEN],
        "file": ["--token-file", str(token_file)],
        "prompt": [],
    }[source]
    result = run(
        *args,
        *extra,
        token=TOKEN if source == "variable" else None,
        stdin=TOKEN + "\n" if source == "prompt" else None,
    )

    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    assert config.read_env_file(paths(root)[0])["CERTCTL_AGENT_BOOTSTRAP_TOKEN"] == TOKEN


@pytest.mark.parametrize(
    ("args", "option", "fix"),
    [
        (["--server-url", "http://certctl.example.com:8443"], "--server-url", "https://"),
        (["--server-url", "certctl.example.com"], "--server-url", "https://"),
        (["--server-url", URL, "--name", "web 01"], "--name", "without them"),
        (["--server-url", URL, "--ca-bundle", "/nonexistent/ca.pem"], "--ca-bundle", "point"),
        (["--server-url", URL, "--token-file", "/nonexistent/token"], "--token-file", "give"),
    ],
)
def test_bad_input_exits_2_naming_the_option_and_writes_nothing(
    tmp_path: Path, args: list[str], option: str, fix: str
) -> None:
    root = tmp_path / "root"
    token = None if "--token-file" in args else TOKEN
    result = run(*args, "--prefix", str(root), token=token)

    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.count("\n") == 0
    assert message.startswith(f"certctl: {option}")
    assert fix in message
    assert not root.exists()


def test_a_token_with_a_space_is_refused_without_quoting_it(tmp_path: Path) -> None:
    result = run("--server-url", URL, "--prefix", str(tmp_path), token="two words")
    assert result.exit_code == 2
    assert "--token/--token-file" in result.stderr
    assert "two words" not in result.output


def test_token_and_token_file_together_are_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    result = run(
        "--server-url", URL, "--prefix", str(tmp_path / "root"), "--token-file", str(token_file)
    )
    assert result.exit_code == 2
    assert "not both" in result.stderr
    assert not (tmp_path / "root").exists()


def test_existing_files_are_refused_without_force(tmp_path: Path) -> None:
    installed(tmp_path)
    env, policy, unit = paths(tmp_path)
    env.write_text("CERTCTL_SERVER_URL=https://kept.example\n")
    unit.unlink()

    refused = run("--server-url", URL, "--prefix", str(tmp_path))
    assert refused.exit_code == 2
    message = refused.stderr.strip()
    assert message.count("\n") == 0
    assert str(env) in message
    assert str(policy) in message
    assert "--force" in message
    assert env.read_text() == "CERTCTL_SERVER_URL=https://kept.example\n"
    assert not unit.exists()

    installed(tmp_path, "--force")
    assert config.read_env_file(env)["CERTCTL_SERVER_URL"] == URL
    assert unit.exists()


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "etc/certctl").mkdir(parents=True)
    (tmp_path / "etc/certctl").chmod(0o777)
    result = run("--server-url", URL, "--prefix", str(tmp_path))
    assert result.exit_code == 2
    assert "chmod go-w" in result.stderr
    assert list((tmp_path / "etc/certctl").iterdir()) == []


def test_the_repo_unit_is_the_packaged_one() -> None:
    """One source: deploy/systemd links to the copy the package (and a wheel) ships."""
    assert REPO_UNIT.is_symlink()
    assert REPO_UNIT.resolve() == Path(install.__file__).with_name(install.UNIT_NAME)
    assert install.unit_text() == REPO_UNIT.read_text()


def test_a_prefix_that_cannot_be_written_exits_1_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "etc").write_text("")  # where /etc/certctl would have to be made
    result = run("--server-url", URL, "--prefix", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "--prefix" in result.stderr
