"""The container packaging: compose files that Debian's ``docker-compose config`` accepts
(and refuses without their secrets), and two guards against the earlier project's
packaging bugs, each proven to fire on a synthetic regression:

- no ``change-me`` placeholder credential in any compose file but the demo overlay;
- no plaintext healthcheck (``http://``, or curl/wget to a URL without ``https://``) in
  any Dockerfile or compose file: the earlier server image probed
  ``http://localhost:8443/health`` against an HTTPS-only listener and stayed unhealthy.

The guards read files as the tools do: compose files as YAML (comments are not content,
anchors and merges are resolved, ``test:`` in list and string form), Dockerfiles as
instructions (line continuations joined, comment lines dropped, exec and shell form).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DEMO = DEPLOY / "docker-compose.demo.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
SERVER_DOCKERFILE = REPO / "containers" / "Dockerfile.server"
AGENT_DOCKERFILE = REPO / "containers" / "Dockerfile.agent"
DEMO_OVERLAY_NAME = DEMO.name

SKIPPED_DIRS = frozenset(
    {".git", ".nox", ".venv", "venv", "node_modules", ".mypy_cache", ".ruff_cache", "build"}
)
COMPOSE_NAME = re.compile(r"^(docker-)?compose([.-][\w.-]+)?\.ya?ml$")
REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?")
PLACEHOLDER = re.compile(r"change-me", re.IGNORECASE)

# --------------------------------------------------------------------------- discovery


def _files(root: Path) -> Iterator[Path]:
    """Every file under ``root``, not descending into virtualenvs, caches or .git."""
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED_DIRS)
        for name in sorted(names):
            yield Path(folder) / name


def compose_files(root: Path) -> list[Path]:
    """Every compose file under ``root`` (``docker-compose*.yml``, ``compose*.yaml``, ...)."""
    return [p for p in _files(root) if COMPOSE_NAME.match(p.name)]


def dockerfiles(root: Path) -> list[Path]:
    """Every Dockerfile under ``root`` (``Dockerfile``, ``Dockerfile.*``, ``*.Dockerfile``)."""
    return [
        p
        for p in _files(root)
        if (p.name == "Dockerfile" or p.name.startswith("Dockerfile.") or p.suffix == ".Dockerfile")
        and not p.name.endswith(".dockerignore")
    ]


# --------------------------------------------------------------------------- YAML walking


def _walk(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """``(path, node)`` for every node of a loaded YAML document, keys included."""
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{where}.{key}", key
            yield from _walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{where}[{index}]")


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AssertionError(f"{path} is not valid YAML: {exc}") from None


# --------------------------------------------------------------------------- guard 1


def placeholder_credentials(root: Path) -> list[str]:
    """``file: where: value`` for each ``change-me`` literal in a compose file other than
    the demo overlay. Comments are not YAML content, so a comment may mention it."""
    found = []
    for path in compose_files(root):
        if path.name == DEMO_OVERLAY_NAME:
            continue
        for where, node in _walk(_load_yaml(path), "$"):
            if isinstance(node, str) and PLACEHOLDER.search(node):
                found.append(f"{path.relative_to(root)}: {where}: {node!r}")
    return found


# --------------------------------------------------------------------------- guard 2

SHELL_OPERATORS = frozenset({"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"})
URLISH = re.compile(
    r"^(?:[a-z][a-z0-9+.-]*://|localhost\b|[\w.-]+:\d+(?:/|$)|\[[0-9a-f:]+\])", re.I
)


def plaintext_problem(command: str) -> str | None:
    """Why a healthcheck command would speak plaintext HTTP, or None."""
    if "http://" in command.lower():
        return "it names an http:// URL"
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    client: str | None = None
    for token in tokens:
        if token in SHELL_OPERATORS or token.endswith(";"):
            client = None
            continue
        name = token.rsplit("/", 1)[-1]
        if name in {"curl", "wget"}:
            client = name
            continue
        plain = not token.lower().startswith("https://")
        if client and plain and not token.startswith("-") and URLISH.match(token):
            return f"{client} fetches {token!r} without https:// (plaintext by default)"
    return None


def _compose_test_command(test: Any) -> str | None:
    """A compose ``healthcheck.test`` as one command line (None: disabled or inherited)."""
    if isinstance(test, str):
        return test
    if isinstance(test, list) and test:
        kind, *rest = (str(item) for item in test)
        if kind == "NONE":
            return None
        if kind in {"CMD", "CMD-SHELL"}:
            return " ".join(rest) if kind == "CMD-SHELL" else shlex.join(rest)
        return shlex.join([kind, *rest])
    return None


def compose_healthchecks(path: Path) -> list[tuple[str, str]]:
    """``(where, command)`` of every ``healthcheck`` mapping in the file, extension fields
    (``x-...`` anchors) included."""
    checks = []
    for where, node in _walk(_load_yaml(path), "$"):
        if where.endswith(".healthcheck") and isinstance(node, dict):
            command = _compose_test_command(node.get("test"))
            if command is not None:
                checks.append((where, command))
    return checks


def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """``(line, INSTRUCTION, arguments)`` with continuations joined and comments dropped."""
    instructions = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue  # Docker drops comment lines inside a continued instruction too
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer.append(line[:-1].strip())
            continue
        buffer.append(line)
        logical = " ".join(part for part in buffer if part)
        buffer = []
        keyword, _, arguments = logical.partition(" ")
        instructions.append((start, keyword.upper(), arguments.strip()))
    if buffer:
        logical = " ".join(part for part in buffer if part)
        keyword, _, arguments = logical.partition(" ")
        instructions.append((start, keyword.upper(), arguments.strip()))
    return instructions


def healthcheck_command(arguments: str) -> tuple[str, list[str] | None] | None:
    """A ``HEALTHCHECK`` instruction's command as ``(command line, exec argv or None)``;
    None for ``HEALTHCHECK NONE``."""
    words = arguments.split()
    while words and words[0].startswith("--"):
        words.pop(0)
    rest = " ".join(words)
    if rest.upper() == "NONE" or not rest:
        return None
    keyword, _, command = rest.partition(" ")
    if keyword.upper() != "CMD":
        return rest, None
    command = command.strip()
    if command.startswith("["):
        try:
            argv = json.loads(command)
        except json.JSONDecodeError:
            return command, None  # Docker falls back to the shell form
        if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
            return shlex.join(argv), argv
    return command, None


def dockerfile_healthchecks(path: Path) -> list[tuple[str, str]]:
    checks = []
    for line, instruction, given in dockerfile_instructions(path.read_text(encoding="utf-8")):
        keyword, arguments = instruction, given
        if instruction == "ONBUILD":
            inner, _, arguments = given.partition(" ")
            keyword = inner.upper()
        if keyword == "HEALTHCHECK" and (found := healthcheck_command(arguments)) is not None:
            checks.append((f"line {line}", found[0]))
    return checks


def plaintext_healthchecks(root: Path) -> list[str]:
    """``file: where: why`` for every healthcheck under ``root`` that speaks plaintext."""
    found = []
    sources = [(p, compose_healthchecks) for p in compose_files(root)]
    sources += [(p, dockerfile_healthchecks) for p in dockerfiles(root)]
    for path, read in sources:
        for where, command in read(path):
            if (why := plaintext_problem(command)) is not None:
                found.append(f"{path.relative_to(root)}: {where}: {why}: {command}")
    return found


# --------------------------------------------------------------------------- the guards on the tree


def test_the_guards_see_the_packaging_files() -> None:
    assert {COMPOSE, DEMO} <= set(compose_files(REPO))
    assert {SERVER_DOCKERFILE, AGENT_DOCKERFILE} <= set(dockerfiles(REPO))
    # Every image and every long-running compose service has a healthcheck to guard.
    assert len(dockerfile_healthchecks(SERVER_DOCKERFILE)) == 1
    assert len(dockerfile_healthchecks(AGENT_DOCKERFILE)) == 1
    services = {w.split(".")[2] for w, _ in compose_healthchecks(COMPOSE)}
    assert services == {"postgres", "certctl-server", "certctl-agent"}


def test_no_placeholder_credentials_outside_the_demo_overlay() -> None:
    assert placeholder_credentials(REPO) == []
    # ... while the overlay does hold them (so the guard's exemption is what keeps it quiet).
    assert PLACEHOLDER.search(DEMO.read_text())


def test_no_plaintext_healthchecks() -> None:
    assert plaintext_healthchecks(REPO) == []


# --------------------------------------------------------------------------- the guards fire


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for source in [*compose_files(REPO), *dockerfiles(REPO)]:
        target = root / source.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is no longer in {path}; update this regression"
    path.write_text(text.replace(old, new, 1))


SERVER_KEYS = "${CERTCTL_API_KEYS:?"
SERVER_CHECK = '["CMD", "certctl", "healthcheck", "--cacert", "/etc/certctl/tls/ca.pem"]'


@pytest.mark.parametrize(
    ("relative", "old", "new"),
    [
        pytest.param(
            "deploy/docker-compose.yml",
            "CERTCTL_API_KEYS: ${CERTCTL_API_KEYS:?",
            "CERTCTL_API_KEYS: admin:change-me-in-production:admin\n      X: ${CERTCTL_API_KEYS:?",
            id="literal-value",
        ),
        pytest.param(
            "deploy/docker-compose.yml",
            "${CERTCTL_CONFIG_ENCRYPTION_KEY:?",
            "${CERTCTL_CONFIG_ENCRYPTION_KEY:-change-me-32-char-encryption-key}${UNUSED:?",
            id="interpolation-default",
        ),
        pytest.param(
            "deploy/docker-compose.yml",
            "      CERTCTL_AGENT_NAME: certctl-agent",
            '      CERTCTL_AGENT_NAME: "Change-Me"',
            id="quoted-any-case",
        ),
        pytest.param(
            "deploy/docker-compose.yml",
            '    command: ["server"]',
            "    command:\n      - server\n      - --env-file=/run/change-me.env",
            id="inside-a-list",
        ),
    ],
)
def test_the_placeholder_guard_fires_on_a_regression(
    tmp_path: Path, relative: str, old: str, new: str
) -> None:
    root = _copy_tree(tmp_path)
    assert placeholder_credentials(root) == []
    _edit(root / relative, old, new)
    found = placeholder_credentials(root)
    assert len(found) == 1, found
    assert found[0].startswith(relative)


def test_the_placeholder_guard_covers_new_compose_files_not_comments(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    (root / "deploy" / "docker-compose.override.yml").write_text(
        "# a comment may say change-me\nservices:\n  postgres:\n"
        "    environment:\n      POSTGRES_PASSWORD: change-me  # and so may this one\n"
    )
    found = placeholder_credentials(root)
    assert len(found) == 1, found
    assert "POSTGRES_PASSWORD" in found[0]
    _edit(root / "deploy" / "docker-compose.yml", "services:", "# change-me\nservices:")
    assert len(placeholder_credentials(root)) == 1


DOCKERFILE_REGRESSIONS = {
    "shell-form": "CMD curl -f http://localhost:8443/health || exit 1",
    "exec-form": 'CMD ["curl", "-f", "http://localhost:8443/health"]',
    "continued": "CMD curl -fsS \\\n    # the probe\n    HTTP://localhost:8443/health",
    "no-scheme": "CMD curl -fsS localhost:8443/health",
    "wget": "CMD wget -qO- 127.0.0.1:8443/health || exit 1",
    "certctl-url": 'CMD ["certctl", "healthcheck", "--url", "http://localhost:8443"]',
}


@pytest.mark.parametrize("new", DOCKERFILE_REGRESSIONS.values(), ids=DOCKERFILE_REGRESSIONS.keys())
@pytest.mark.parametrize("dockerfile", ["Dockerfile.server", "Dockerfile.agent"])
def test_the_healthcheck_guard_fires_on_a_dockerfile_regression(
    tmp_path: Path, dockerfile: str, new: str
) -> None:
    root = _copy_tree(tmp_path)
    path = root / "containers" / dockerfile
    (line, _, arguments) = next(
        i for i in dockerfile_instructions(path.read_text()) if i[1] == "HEALTHCHECK"
    )
    command = arguments[arguments.index("CMD") :]
    # The instruction spans lines in the file; replace the CMD on its own line.
    text = path.read_text()
    original = text.split("\n")[line - 1 :]
    cmd_line = next(n for n, t in enumerate(original) if t.strip().startswith("CMD"))
    assert original[cmd_line].strip() == command
    lines = text.split("\n")
    lines[line - 1 + cmd_line] = "    " + new
    path.write_text("\n".join(lines))
    found = plaintext_healthchecks(root)
    assert len(found) == 1, found
    assert found[0].startswith(f"containers/{dockerfile}: line {line}:")


def test_the_healthcheck_guard_reads_lowercase_onbuild_and_skips_comments(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    extra = root / "containers" / "extra" / "Dockerfile"
    extra.parent.mkdir()
    extra.write_text(
        "FROM scratch\n# HEALTHCHECK CMD curl http://localhost/\n"
        "healthcheck --interval=5s cmd curl https://localhost:8443/health\n"
    )
    assert plaintext_healthchecks(root) == []
    extra.write_text("FROM scratch\nONBUILD healthcheck cmd wget -q http://localhost/\n")
    assert len(plaintext_healthchecks(root)) == 1


COMPOSE_REGRESSIONS = {
    "list-cmd": '["CMD", "curl", "-f", "http://localhost:8443/health"]',
    "list-cmd-shell": '["CMD-SHELL", "curl -f http://localhost:8443/health || exit 1"]',
    "string": '"curl -fsS localhost:8443/health"',
    "folded": ">-\n        wget -qO-\n        http://localhost:8443/health",
}


@pytest.mark.parametrize("new", COMPOSE_REGRESSIONS.values(), ids=COMPOSE_REGRESSIONS.keys())
def test_the_healthcheck_guard_fires_on_a_compose_regression(tmp_path: Path, new: str) -> None:
    root = _copy_tree(tmp_path)
    _edit(root / "deploy" / "docker-compose.yml", f"test: {SERVER_CHECK}", f"test: {new}")
    found = plaintext_healthchecks(root)
    assert len(found) == 1, found
    assert found[0].startswith("deploy/docker-compose.yml: $.services.certctl-server.healthcheck")


def test_the_healthcheck_guard_reads_anchors_and_the_demo_overlay(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    _edit(
        root / "deploy" / "docker-compose.yml",
        "x-certctl-hardening: &hardening",
        "x-probe: &probe\n  healthcheck:\n    test: curl http://localhost:8443/health\n"
        "x-certctl-hardening: &hardening",
    )
    assert len(plaintext_healthchecks(root)) == 1
    _edit(
        root / "deploy" / "docker-compose.demo.yml",
        "  certctl-agent:\n",
        "  certctl-agent:\n    healthcheck:\n      test: [CMD, wget, -q, 'localhost:8443']\n",
    )
    assert len(plaintext_healthchecks(root)) == 2
    # A comment naming a plaintext URL is not a healthcheck.
    _edit(root / "deploy" / "docker-compose.yml", "services:", "# test: curl http://x\nservices:")
    assert len(plaintext_healthchecks(root)) == 2


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("certctl healthcheck --cacert /etc/certctl/tls/ca.pem", False),
        ("certctl healthcheck --role agent", False),
        ("curl -fsS --cacert /ca.pem https://localhost:8443/health", False),
        ("curl -o /dev/null -fsS https://[::1]:8443/health", False),
        ("curl -f http://localhost:8443/health", True),
        ("curl -f [::1]:8443/health", True),
        ("/usr/bin/curl -fsS localhost/health", True),
        ("true && wget -q example.com:80/", True),
        ("pg_isready -U certctl -d certctl", False),
    ],
)
def test_plaintext_problem(command: str, problem: bool) -> None:
    assert (plaintext_problem(command) is not None) is problem


# --------------------------------------------------------------------------- compose config


def _example_keys() -> list[str]:
    """Every variable .env.example names, the commented-out (optional) ones included."""
    keys = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?([A-Z][A-Z0-9_]*)=", line.strip())
        if match:
            keys.append(match.group(1))
    return keys


def _test_value(key: str) -> str:
    if key == "CERTCTL_API_KEYS":
        return f"admin:{secrets.token_hex(16)}:admin"
    if key == "CERTCTL_DEMO_MODE_ACK_TS":
        return "1700000000"
    return secrets.token_hex(24)


def _write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


@pytest.fixture
def filled() -> dict[str, str]:
    """.env.example filled in with test values."""
    return {key: _test_value(key) for key in _example_keys()}


def test_env_example_has_no_usable_values() -> None:
    for line in ENV_EXAMPLE.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, sep, value = stripped.partition("=")
            assert sep, f".env.example: {stripped!r} is not KEY=VALUE"
            assert value == "", f".env.example sets {key}: leave every value empty"


def required_variables(path: Path) -> list[str]:
    """The variables a compose file requires (``${VAR:?...}`` in its content, not comments)."""
    found = set()
    for _, node in _walk(_load_yaml(path), "$"):
        if isinstance(node, str):
            found.update(REQUIRED_VAR.findall(node))
    return sorted(found)


def test_env_example_names_every_required_variable() -> None:
    required = {*required_variables(COMPOSE), *required_variables(DEMO)}
    assert required == set(_example_keys())
    assert "CERTCTL_DEMO_MODE_ACK_TS" not in required_variables(COMPOSE)


@pytest.fixture(scope="module")
def compose_cli() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip("docker-compose is not installed: sudo apt-get install docker-compose")
    return found


def compose(
    cli: str, env_file: Path, *files: Path, args: tuple[str, ...] = ("config", "-q")
) -> subprocess.CompletedProcess[str]:
    command = [cli, "--env-file", str(env_file)]
    for path in files:
        command += ["-f", str(path)]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=env_file.parent,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(env_file.parent)},
    )


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, DEMO)], ids=["base", "demo-overlay"])
def test_compose_config_accepts_the_files(
    compose_cli: str, tmp_path: Path, filled: dict[str, str], files: tuple[Path, ...]
) -> None:
    env_file = _write_env(tmp_path / "test.env", filled)
    checked = compose(compose_cli, env_file, *files)
    assert checked.returncode == 0, checked.stderr
    rendered = compose(compose_cli, env_file, *files, args=("config",))
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    server = services["certctl-server"]["environment"]
    agent = services["certctl-agent"]["environment"]
    if DEMO in files:
        assert server["CERTCTL_DEMO_MODE_ACK_TS"] == filled["CERTCTL_DEMO_MODE_ACK_TS"]
        assert agent["CERTCTL_DEMO_MODE_ACK"] == server["CERTCTL_DEMO_MODE_ACK"] == "true"
    else:
        # The secrets reach the processes from the env file, and only from there.
        assert server["CERTCTL_API_KEYS"] == filled["CERTCTL_API_KEYS"]
        assert agent["CERTCTL_AGENT_BOOTSTRAP_TOKEN"] == filled["CERTCTL_AGENT_BOOTSTRAP_TOKEN"]
        assert "CERTCTL_DEMO_MODE_ACK" not in server
    password = filled["POSTGRES_PASSWORD"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    assert f"certctl:{password}@postgres:5432/" in server["CERTCTL_DATABASE_URL"]
    assert server["CERTCTL_CONFIG_ENCRYPTION_KEY"] == filled["CERTCTL_CONFIG_ENCRYPTION_KEY"]


@pytest.mark.parametrize("missing", required_variables(COMPOSE))
def test_compose_refuses_without_a_required_secret(
    compose_cli: str, tmp_path: Path, filled: dict[str, str], missing: str
) -> None:
    for values in ({**filled, missing: ""}, {k: v for k, v in filled.items() if k != missing}):
        env_file = _write_env(tmp_path / "test.env", values)
        refused = compose(compose_cli, env_file, COMPOSE)
        assert refused.returncode != 0
        assert f"{missing} is not set" in refused.stderr, refused.stderr


def test_the_demo_overlay_refuses_without_its_acknowledgement(
    compose_cli: str, tmp_path: Path, filled: dict[str, str]
) -> None:
    del filled["CERTCTL_DEMO_MODE_ACK_TS"]
    env_file = _write_env(tmp_path / "test.env", filled)
    assert compose(compose_cli, env_file, COMPOSE).returncode == 0
    refused = compose(compose_cli, env_file, COMPOSE, DEMO)
    assert refused.returncode != 0
    assert "CERTCTL_DEMO_MODE_ACK_TS is not set" in refused.stderr


# --------------------------------------------------------------------------- compose shape


def test_compose_start_order_and_probes() -> None:
    services = _load_yaml(COMPOSE)["services"]
    server, agent, init = (
        services["certctl-server"],
        services["certctl-agent"],
        services["certctl-tls-init"],
    )
    assert server["depends_on"] == {
        "certctl-tls-init": {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
    }
    assert agent["depends_on"]["certctl-server"] == {"condition": "service_healthy"}
    assert init["restart"] == "no"
    assert "init-tls" in " ".join(init["command"])
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert "ports" not in postgres, "the database stays on the compose network"
    assert server["healthcheck"]["test"] == json.loads(SERVER_CHECK)
    assert agent["healthcheck"]["test"] == ["CMD", "certctl", "healthcheck", "--role", "agent"]
    # The agent sees the CA certificate alone, read-only; never the server's key.
    assert all("server-tls" not in v for v in agent["volumes"])
    assert "ca-bundle:/etc/certctl/ca:ro" in agent["volumes"]
    assert "./agent-policy.toml:/etc/certctl/agent-policy.toml:ro" in agent["volumes"]
    for name in ("certctl-tls-init", "certctl-server", "certctl-agent"):
        assert services[name]["read_only"] is True
        assert services[name]["cap_drop"] == ["ALL"]


# --------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize(
    ("path", "volumes"),
    [
        (SERVER_DOCKERFILE, ["/var/lib/certctl", "/etc/certctl/tls"]),
        (AGENT_DOCKERFILE, ["/var/lib/certctl-agent", "/etc/ssl/certctl"]),
    ],
)
def test_dockerfile_shape(path: Path, volumes: list[str]) -> None:
    instructions = dockerfile_instructions(path.read_text())
    by_keyword: dict[str, list[str]] = {}
    for _, keyword, arguments in instructions:
        by_keyword.setdefault(keyword, []).append(arguments)
    froms = by_keyword["FROM"]
    assert len(froms) == 2, "multi-stage: build, runtime"
    assert froms[0].endswith(" AS build")
    assert "PYTHON_IMAGE=python:3.11-slim" in by_keyword["ARG"]
    assert any("pip wheel" in run for run in by_keyword["RUN"])
    assert by_keyword["USER"][-1] == "10001:10001"
    assert json.loads(by_keyword["ENTRYPOINT"][-1])[:3] == ["/usr/bin/tini", "--", "certctl"]
    assert any("install -y --no-install-recommends tini" in run for run in by_keyword["RUN"])
    assert json.loads(by_keyword["VOLUME"][-1]) == volumes
    labels = " ".join(by_keyword["LABEL"])
    for key in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{key}=" in labels
    env = " ".join(by_keyword["ENV"])
    assert f"HOME={volumes[0]}" in env
    assert f"TMPDIR={volumes[0]}/tmp" in env
    (healthcheck,) = by_keyword["HEALTHCHECK"]
    found = healthcheck_command(healthcheck)
    assert found is not None
    assert found[1] is not None, "exec form, so it can be parsed"
    assert found[1][:2] == ["certctl", "healthcheck"]
