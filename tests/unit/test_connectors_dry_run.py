"""The dry run (``validate_only``) and ``certctl agent validate-target``.

A recording runner stands in for the server binaries here, and reads the probe config
while the dry run is still running, so these tests see exactly which files it pointed
the server at. ``tests/integration/test_sidecar_deploy.py`` runs the real binaries.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from certctl.cli import main
from certctl.connectors.targets.base import Material
from certctl.connectors.targets.dry_run import validate_target
from certctl.connectors.targets.registry import load_connector
from certctl.core.model import TargetType
from certctl.deploy import Command, CommandFailed, ValidateFailed
from certctl.testing.material import ScratchCA
from certctl.testing.policy import allowing, write_policy

BINARY = shutil.which("true") or "/bin/true"
"""A program present everywhere, standing in for the server binary the recorder never runs."""


class Recorder:
    """Runs nothing; keeps each argv and the text of every file it names."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[Command] = []
        self.files: dict[str, str] = {}
        self.fail = fail

    def run(self, argv: Command, timeout: float) -> str:
        self.calls.append(argv)
        for arg in argv[1:]:
            if Path(arg).is_file():
                self.files[arg] = Path(arg).read_text()
        if argv[0] == self.fail:
            raise CommandFailed(argv, "exited with status 1", "emerg: key too small")
        return "ok"


@pytest.fixture(scope="module")
def version() -> Material:
    return ScratchCA("dry run").issue("dry.example.test")


def nginx(live: Path, **extra: Any) -> dict[str, Any]:
    return {
        "cert_path": str(live / "cert.pem"),
        "key_path": str(live / "key.pem"),
        "reload_command": "nginx -s reload",
        "validate_command": "nginx -t",
        "binary": BINARY,
    } | extra


async def test_probe_loads_staged_copies_and_nothing_live_is_touched(
    tmp_path: Path, version: Material
) -> None:
    live = tmp_path / "live"  # does not even exist: the dry run must not need it
    connector = load_connector(TargetType.NGINX, nginx(live))
    recorder = Recorder()
    dry = await connector.validate_only(
        version.cert_pem, version.chain_pem, version.key_pem, runner=recorder
    )
    probe, validate = recorder.calls
    assert validate == ("nginx", "-t")
    assert ("nginx", "-s", "reload") not in recorder.calls
    assert probe[:2] == (BINARY, "-t")
    (conf,) = (text for path, text in recorder.files.items() if path.endswith(".conf"))
    staged_cert = re.search(r"ssl_certificate (\S+);", conf)
    staged_key = re.search(r"ssl_certificate_key (\S+);", conf)
    assert staged_cert is not None
    assert staged_key is not None
    assert str(live) not in conf
    assert not live.exists()
    assert [c.argv for c in dry.checks] == recorder.calls
    assert [f.path for f in dry.plan.files] == [str(live / "cert.pem"), str(live / "key.pem")]
    # the staged copies were the planned bytes, and are gone afterwards
    assert not Path(staged_cert.group(1)).exists()


async def test_haproxy_probe_binds_the_staged_combined_pem(
    tmp_path: Path, version: Material
) -> None:
    config = {"pem_path": str(tmp_path / "site.pem"), "reload_command": "true"}
    connector = load_connector(TargetType.HAPROXY, config | {"binary": BINARY})
    recorder = Recorder()
    await connector.validate_only(
        version.cert_pem, version.chain_pem, version.key_pem, runner=recorder
    )
    (probe,) = recorder.calls  # no validate_command configured
    (cfg,) = recorder.files.values()
    assert re.search(r"bind 127\.0\.0\.1:9 ssl crt \S+site\.pem", cfg)
    assert str(tmp_path) not in cfg
    assert probe == (BINARY, "-c", "-f", next(iter(recorder.files)))


async def test_a_failing_check_is_a_validate_failure_with_its_output(
    tmp_path: Path, version: Material
) -> None:
    connector = load_connector(TargetType.NGINX, nginx(tmp_path))
    with pytest.raises(ValidateFailed, match=r"key too small.*nothing was changed"):
        await connector.validate_only(
            version.cert_pem,
            version.chain_pem,
            version.key_pem,
            runner=Recorder(fail=BINARY),
        )


async def test_bad_material_fails_before_any_command(tmp_path: Path, version: Material) -> None:
    other = ScratchCA("dry run, other").issue("dry.example.test")
    connector = load_connector(TargetType.NGINX, nginx(tmp_path))
    recorder = Recorder()
    with pytest.raises(ValidateFailed, match="does not match the certificate"):
        await connector.validate_only(
            version.cert_pem, version.chain_pem, other.key_pem, runner=recorder
        )
    assert recorder.calls == []


async def test_a_missing_server_binary_is_noted_not_hidden(
    tmp_path: Path, version: Material
) -> None:
    connector = load_connector(TargetType.NGINX, nginx(tmp_path, binary="no-such-nginx"))
    recorder = Recorder()
    dry = await connector.validate_only(
        version.cert_pem, version.chain_pem, version.key_pem, runner=recorder
    )
    assert recorder.calls == [("nginx", "-t")]
    assert dry.notes == (
        "no-such-nginx is not installed here, so the staged files were checked in-process only.",
    )


def write(path: Path, config: object) -> Path:
    path.write_text(json.dumps(config))
    return path


def test_validate_target_exit_statuses(tmp_path: Path, version: Material) -> None:
    live = tmp_path / "live"
    good = {"cert_path": str(live / "c.pem"), "key_path": str(live / "k.pem")}
    ok = write(tmp_path / "ok.json", good | {"validate_command": "true"})
    failing = write(tmp_path / "fail.json", good | {"validate_command": "false"})
    invalid = write(tmp_path / "bad.json", {"cert_path": "relative.pem"})

    status, message = validate_target("postfix", ok)
    assert status == 0
    assert message.endswith("(ran: true); nothing was changed.")
    assert validate_target("postfix", failing) == (
        1,
        "dry run: false exited with status 1; nothing was changed.",
    )
    status, message = validate_target("postfix", invalid)
    assert (status, message.split(":")[0:2]) == (2, ["Postfix target", " cert_path"])
    assert not live.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON (Expecting property name"),
        ("[1, 2]", "holds JSON but not an object"),
    ],
)
def test_unusable_config_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "target.json"
    path.write_text(content)
    status, text = validate_target("postfix", path)
    assert status == 2
    assert message in text


def test_given_material_is_checked(tmp_path: Path, version: Material) -> None:
    config = write(
        tmp_path / "t.json",
        {
            "cert_path": str(tmp_path / "c"),
            "key_path": str(tmp_path / "k"),
            "validate_command": "true",
        },
    )
    cert = tmp_path / "cert.pem"
    cert.write_bytes(version.cert_pem)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(ScratchCA("dry run, cli").issue("dry.example.test").key_pem)
    status, message = validate_target("dovecot", config, cert=cert, key=other_key)
    assert status == 1
    assert "does not match the certificate" in message
    status, message = validate_target("dovecot", config, cert=cert)
    assert (status, message) == (
        2,
        "--cert and --key go together; give both, or neither for a sample.",
    )


def test_cli_prints_one_line_and_exits_with_the_status(tmp_path: Path) -> None:
    config = write(
        tmp_path / "t.json",
        {
            "cert_path": str(tmp_path / "c"),
            "key_path": str(tmp_path / "k"),
            "validate_command": "false",
        },
    )
    allowed = allowing([tmp_path], [["false"], ["postfix", "reload"]])
    policy = write_policy(tmp_path / "policy" / "p.toml", allowed)
    runner = CliRunner(env={"CERTCTL_AGENT_POLICY_FILE": str(policy)})
    result = runner.invoke(
        main, ["agent", "validate-target", "--type", "postfix", "--config", str(config)]
    )
    assert result.exit_code == 1
    assert result.output == "certctl: dry run: false exited with status 1; nothing was changed.\n"
    refused = CliRunner().invoke(
        main, ["agent", "validate-target", "--type", "postfix", "--config", str(config)]
    )
    assert refused.exit_code == 1
    assert "connectors.postfix.write_roots" in refused.output
    result = runner.invoke(
        main, ["agent", "validate-target", "--type", "nope", "--config", str(config)]
    )
    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1
