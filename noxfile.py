"""Task runner: `nox -s lint`, `nox -s tests`, `nox -s bench -- NAME`.

Each session installs the package into its own virtualenv, so a fresh machine with only
Python 3.11+ and pip can run every one of them.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy --strict on the package."""
    session.install("-e", ".[lint,test]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "certctl")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Everything not marked `sidecar` or `process`; `-- --hypothesis-profile=deep` for the soak.

    Branch coverage of the deterministic core is enforced at 100% here: the core is where
    every decision lives, so an untested branch there is an untested decision.
    """
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-m",
        "not sidecar and not process",
        "--hypothesis-profile=ci",
        "--durations=10",
        "--cov=certctl.core",
        "--cov-branch",
        "--cov-report=term-missing",
        "--cov-fail-under=100",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Connectors against real servers, and the end-to-end lifecycle (server + agent +
    NGINX over HTTPS): the tests marked ``sidecar``; and the product run as processes for a
    minute (the demo, the compose stack): the tests marked ``process``.

    Servers run as containers when a Docker engine answers, otherwise as private local
    processes from the distribution's packages (``.ci/run`` installs them); a server that
    is missing skips with its install command.
    """
    session.install("-e", ".[test]")
    session.run(
        "pytest", "-m", "sidecar or process", "tests/integration", "tests/e2e", *session.posargs
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks print figures and ratios against an in-run baseline; they never fail on time.

    `nox -s bench` runs all of them, `nox -s bench -- core` one of them. The ``load``
    extra brings locust, which drives the HTTPS load of `nox -s bench -- api`.
    """
    session.install("-e", ".[test,load]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=False)
def images(session: nox.Session) -> None:
    """Build both images, then run the compose stack with the demo overlay and take it down.

    Needs a Docker engine (and the `docker compose` plugin), so it is not part of CI here:
    this machine has only a docker client, and the session is not in
    ``nox.options.sessions``. Without an engine, tests/integration/test_compose_processes.py
    and test_image_healthcheck.py run the same commands and healthchecks as processes.

    What it checks: containers/Dockerfile.server and containers/Dockerfile.agent build from
    the repository root (wheels in stage 1, python:3.11-slim as uid 10001 with tini in
    stage 2); `docker compose up --wait` brings up TLS init (must exit 0), PostgreSQL 16,
    the server and the agent in depends_on order and waits until every healthcheck passes
    (HTTPS with --cacert for the server, the liveness file for the agent), with read-only
    root file systems. Secrets are generated for the run into a temporary env file; the
    stack and its volumes are removed afterwards (`down -v`), whether it came up or not.
    """
    # Imported here so that the rest of this file stays as it is.
    import os  # noqa: PLC0415
    import secrets  # noqa: PLC0415
    import time  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    policy = Path("deploy/agent-policy.toml")
    if policy.stat().st_uid != 0 or policy.stat().st_mode & 0o022:
        session.error(
            f"{policy} must be owned by root and writable only by it: the agent refuses a "
            f"host policy others could edit. Run: sudo chown root:root {policy} && "
            f"sudo chmod 0644 {policy}"
        )
    for role in ("server", "agent"):
        session.run(
            "docker", "build", "-f", f"containers/Dockerfile.{role}",
            "-t", f"certctl-{role}:local", ".", external=True,
        )  # fmt: skip
    env_file = Path(session.create_tmp()) / "images.env"
    values = {
        "POSTGRES_PASSWORD": secrets.token_hex(32),
        "CERTCTL_API_KEYS": f"admin:{secrets.token_hex(32)}:admin",
        "CERTCTL_AGENT_BOOTSTRAP_TOKEN": secrets.token_hex(32),
        "CERTCTL_CONFIG_ENCRYPTION_KEY": secrets.token_hex(32),
        "CERTCTL_DEMO_MODE_ACK_TS": str(int(time.time())),
    }
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{k}={v}\n" for k, v in values.items()))
    compose = (
        "docker", "compose", "--project-name", "certctl-images", "--env-file", str(env_file),
        "-f", "deploy/docker-compose.yml", "-f", "deploy/docker-compose.demo.yml",
    )  # fmt: skip
    try:
        session.run(*compose, "up", "--wait", "--wait-timeout", "300", external=True)
        session.run(*compose, "ps", external=True)
    finally:
        session.run(*compose, "logs", "--no-color", "--tail", "50", external=True)
        session.run(*compose, "down", "--volumes", external=True)
