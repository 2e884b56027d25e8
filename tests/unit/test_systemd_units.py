"""The systemd units in deploy/systemd: valid for systemd, and as hardened as documented.

``systemd-analyze verify`` is the authority on syntax (where it is installed); the
hardening is asserted by reading the units here, so it holds on machines without systemd
too and a key removed or weakened by mistake fails a test rather than a host's sandbox.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from certctl.cli import EXIT_CONFIG, main

UNITS = Path(__file__).parents[2] / "deploy/systemd"
SERVER = UNITS / "certctl-server.service"
AGENT = UNITS / "certctl-agent.service"
INSTALLED_BINARY = "/opt/certctl/bin/certctl"


class _UnitParser(configparser.ConfigParser):
    """Unit keys are case-sensitive (``User``, not ``user``)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def service(unit: Path) -> configparser.SectionProxy:
    """The [Service] section; a repeated key keeps its last value, as systemd's does for
    the single-valued keys asserted here (``%`` is systemd's specifier, not interpolation)."""
    parser = _UnitParser(strict=False, interpolation=None)
    parser.read_string(unit.read_text(encoding="utf-8"))
    return parser["Service"]


def verify(unit_text: str, name: str, tmp_path: Path) -> list[str]:
    """What ``systemd-analyze verify`` says about ``unit_text`` installed as ``name``.

    verify refuses a unit whose ExecStart binary does not exist, and /opt/certctl is not
    installed here, so the copy verified runs this interpreter instead (same arguments,
    every other line unchanged). The copy keeps the unit's file name: verify derives the
    unit name and type from it. verify exits 0 even for unknown keys and unparsable
    values, which it only prints, so what it prints about this unit is the result; lines
    about other units of the host (its targets, say) are not this test's business.
    """
    lines = unit_text.splitlines()
    copy = [
        line.replace(f"ExecStart={INSTALLED_BINARY}", f"ExecStart={sys.executable}", 1)
        for line in lines
    ]
    assert sum(a != b for a, b in zip(lines, copy, strict=True)) == 1
    path = tmp_path / name
    path.write_text("\n".join(copy) + "\n", encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = [line for line in (done.stdout + done.stderr).splitlines() if name in line]
    return [f"exit {done.returncode}", *said] if done.returncode else said


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [SERVER, AGENT], ids=lambda p: p.name)
def test_systemd_analyze_verify_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    assert verify(unit.read_text(encoding="utf-8"), unit.name, tmp_path) == []


@needs_systemd_analyze
def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported, though verify exits 0."""
    broken = SERVER.read_text(encoding="utf-8").replace("ProtectSystem=", "ProtectSystm=")
    said = verify(broken, SERVER.name, tmp_path)
    assert any("ProtectSystm" in line for line in said)


@pytest.mark.parametrize("unit", [SERVER, AGENT], ids=lambda p: p.name)
def test_both_units_share_the_sandbox(unit: Path) -> None:
    keys = service(unit)
    assert keys["User"] == "certctl"
    assert keys["NoNewPrivileges"] == "yes"
    assert keys["ProtectSystem"] == "strict"
    assert keys["ProtectHome"] == "yes"
    assert keys["PrivateTmp"] == "yes"
    assert keys["CapabilityBoundingSet"] == ""
    assert keys["AmbientCapabilities"] == ""
    assert keys["RestrictSUIDSGID"] == "yes"
    assert keys["SystemCallFilter"] == "@system-service"
    assert keys["Restart"] == "on-failure"
    # Exit 2 is "configuration refused": restarting cannot fix the env file.
    assert keys["RestartPreventExitStatus"] == str(EXIT_CONFIG) == "2"


@pytest.mark.parametrize(("unit", "command"), [(SERVER, "server"), (AGENT, "agent")])
def test_exec_start_runs_the_command_of_the_unit(unit: Path, command: str) -> None:
    program, *args = shlex.split(service(unit)["ExecStart"])
    assert program == INSTALLED_BINARY
    assert args == [command]
    assert main.get_command(click.Context(main), command) is not None


def test_the_server_reloads_its_certificate_on_hup() -> None:
    assert shlex.split(service(SERVER)["ExecReload"]) == ["/bin/kill", "-HUP", "$MAINPID"]


def test_the_server_reads_its_env_file() -> None:
    assert service(SERVER)["EnvironmentFile"] == "/etc/certctl/server.env"


def test_the_server_can_write_its_data_dir() -> None:
    keys = service(SERVER)
    environment = dict(item.split("=", 1) for item in shlex.split(keys["Environment"]))
    data_dir = environment["CERTCTL_DATA_DIR"]
    writable = [f"%S/{name}" for name in keys.get("StateDirectory", "").split()]
    writable += keys.get("ReadWritePaths", "").split()
    assert any(data_dir == root or data_dir.startswith(root + "/") for root in writable)
