"""Each image's HEALTHCHECK, read from its Dockerfile and run as Docker would run it: the
exec-form argv with the image's ``ENV`` (paths rewritten to a temporary setup, the port to
the test server's), ``certctl`` being this virtualenv's. Healthy against a real server and
a real agent; unhealthy, with one line saying why, once they are gone.

No Docker engine is needed: the command is the contract, and these are its processes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from conftest_store import Cluster

from certctl.testing.server import ServerProcess, control_plane, start_certctl, write_env

REPO = Path(__file__).resolve().parents[2]
SERVER_DOCKERFILE = REPO / "containers" / "Dockerfile.server"
AGENT_DOCKERFILE = REPO / "containers" / "Dockerfile.agent"
CERTCTL = Path(sys.executable).parent / "certctl"
PROBES = 300  # healthcheck runs before giving up on a start (each one a child process)
PROBE_PAUSE = 0.2  # seconds between two runs: a pause, not a deadline

# --------------------------------------------------------------------------- reading a Dockerfile


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)``: continuations joined, comment lines dropped."""
    instructions: list[tuple[str, str]] = []
    buffer: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not buffer and not line):
            continue
        if line.endswith("\\"):
            buffer.append(line[:-1].strip())
            continue
        keyword, _, arguments = " ".join(p for p in [*buffer, line] if p).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        buffer = []
    return instructions


def final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def image_healthcheck(path: Path) -> list[str]:
    """The HEALTHCHECK's exec-form argv (options such as ``--interval`` skipped)."""
    (arguments,) = [a for k, a in final_stage(path) if k == "HEALTHCHECK"]
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", arguments)
    assert match, f"{path}: HEALTHCHECK is not in exec form: {arguments}"
    argv = json.loads(match.group(1))
    assert isinstance(argv, list)
    assert all(isinstance(a, str) for a in argv)
    return argv


def image_env(path: Path) -> dict[str, str]:
    """The final stage's ``ENV`` (``KEY=VALUE ...`` and the legacy ``KEY VALUE``)."""
    env: dict[str, str] = {}
    for keyword, arguments in final_stage(path):
        if keyword != "ENV":
            continue
        words = shlex.split(arguments)
        if words and "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def rewrite_paths(value: str, paths: Mapping[str, Path]) -> str:
    """``value`` with each container path replaced by its host directory, in one pass (a
    host path is never rewritten again) and longest first (``/tmp`` does not take
    ``/tmp/x``'s place)."""
    if not paths:
        return value
    choices = "|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True))
    pattern = rf"(?<![\w.-])({choices})(?=/|$|[^\w.-])"
    return re.sub(pattern, lambda match: str(paths[match.group(1)]), value)


def probe_env(dockerfile: Path, paths: Mapping[str, Path], **overrides: str) -> dict[str, str]:
    """What the HEALTHCHECK sees in the container: the image's ENV (paths rewritten, PATH
    leading to this virtualenv's certctl), and nothing of this process's CERTCTL_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}
    env.update({k: rewrite_paths(v, paths) for k, v in image_env(dockerfile).items()})
    env["PATH"] = f"{CERTCTL.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env.update(overrides)
    for key in ("HOME", "TMPDIR"):
        if key in env:
            Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


def run_probe(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    command = [str(CERTCTL) if argv[0] == "certctl" else argv[0], *argv[1:]]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, env=dict(env)
    )


def poll_until_healthy(
    argv: list[str], env: Mapping[str, str], *, alive: subprocess.Popen[bytes] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the probe until it exits 0, at most ``PROBES`` times (Docker's retries, with
    the start period folded in); fails with the last answer otherwise."""
    result = run_probe(argv, env)
    for _ in range(PROBES):
        if result.returncode == 0:
            return result
        assert result.returncode != 2, f"the probe's options are refused: {result.stderr}"
        assert alive is None or alive.poll() is None, f"the process exited: {result.stderr}"
        time.sleep(PROBE_PAUSE)
        result = run_probe(argv, env)
    raise AssertionError(f"never healthy after {PROBES} probes; last: {result.stderr}")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def database(pg_cluster: Cluster) -> Iterator[str]:
    name = pg_cluster.create_database()
    yield name
    pg_cluster.drop_database(name)


@pytest.fixture(scope="module")
def server(
    pg_cluster: Cluster, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("image-healthcheck")
    with control_plane(workdir, database_url=pg_cluster.dsn(database)) as running:
        yield running


def server_paths(server: ServerProcess, tmp_path: Path) -> dict[str, Path]:
    """The server image's volumes: the TLS directory holds what init-tls writes there."""
    return {"/etc/certctl/tls": server.ca_path.parent, "/var/lib/certctl": tmp_path / "data"}


# --------------------------------------------------------------------------- server image


def test_the_server_image_probes_https_with_certctl() -> None:
    argv = image_healthcheck(SERVER_DOCKERFILE)
    assert argv[:2] == ["certctl", "healthcheck"]
    assert "--insecure-localhost" in argv or "--cacert" in argv
    assert not any(a.startswith("http://") for a in argv)
    assert image_env(SERVER_DOCKERFILE)["CERTCTL_SERVER_PORT"] == "8443"


def test_the_server_image_healthcheck_passes_against_a_running_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    argv = image_healthcheck(SERVER_DOCKERFILE)
    env = probe_env(
        SERVER_DOCKERFILE, server_paths(server, tmp_path), CERTCTL_SERVER_PORT=str(server.port)
    )
    result = poll_until_healthy(argv, env, alive=server.process)
    assert result.stdout.startswith(f"healthy: https://localhost:{server.port}")


def test_the_server_image_healthcheck_fails_once_the_server_stopped(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    database = pg_cluster.create_database()
    try:
        with control_plane(tmp_path / "server", database_url=pg_cluster.dsn(database)) as gone:
            argv = image_healthcheck(SERVER_DOCKERFILE)
            env = probe_env(
                SERVER_DOCKERFILE, server_paths(gone, tmp_path), CERTCTL_SERVER_PORT=str(gone.port)
            )
            assert poll_until_healthy(argv, env, alive=gone.process).returncode == 0
            assert gone.stop() == 0
            stopped = run_probe(argv, env)
    finally:
        pg_cluster.drop_database(database)
    assert stopped.returncode == 1
    assert stopped.stdout == ""
    assert "refused the connection" in one_line(stopped.stderr)


# --------------------------------------------------------------------------- agent image


def test_the_agent_image_reads_the_liveness_file() -> None:
    argv = image_healthcheck(AGENT_DOCKERFILE)
    assert argv == ["certctl", "healthcheck", "--role", "agent"]
    assert image_env(AGENT_DOCKERFILE)["CERTCTL_AGENT_STATE_DIR"] == "/var/lib/certctl-agent"


def test_the_agent_image_healthcheck_follows_a_running_agent(
    server: ServerProcess, tmp_path: Path
) -> None:
    volume = tmp_path / "agent-volume"
    paths = {"/var/lib/certctl-agent": volume, "/etc/ssl/certctl": tmp_path / "deployed"}
    argv = image_healthcheck(AGENT_DOCKERFILE)
    env = probe_env(AGENT_DOCKERFILE, paths)
    assert env["CERTCTL_AGENT_STATE_DIR"] == str(volume)

    # No agent has ever run with this state directory: unhealthy, one line.
    before = run_probe(argv, env)
    assert before.returncode == 1
    assert "has not run a heartbeat" in one_line(before.stderr)

    # The agent's own configuration comes from compose or `docker run -e`; the image's
    # ENV places its state in the volume, where the probe looks.
    agent_env = {k: env[k] for k in image_env(AGENT_DOCKERFILE) if k.startswith("CERTCTL_")}
    env_file = write_env(
        tmp_path / "agent.env",
        {
            **agent_env,
            "CERTCTL_SERVER_URL": server.url,
            "CERTCTL_SERVER_CA_BUNDLE_PATH": str(server.ca_path),
            "CERTCTL_AGENT_BOOTSTRAP_TOKEN": server.bootstrap_token,
            "CERTCTL_AGENT_NAME": "image-healthcheck",
            "CERTCTL_AGENT_HEARTBEAT_INTERVAL": "1s",
        },
    )
    agent = start_certctl("agent", env_file, tmp_path / "agent.log", name="agent")
    try:
        healthy = poll_until_healthy(argv, env, alive=agent.process)
        assert healthy.stdout.startswith("healthy: agent pid")
    finally:
        assert agent.stop() == 0, agent.log()
    stopped = run_probe(argv, env)
    assert stopped.returncode == 1
    assert "is not running" in one_line(stopped.stderr)
