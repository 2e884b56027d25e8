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
    """Everything that needs no sidecar; `-- --hypothesis-profile=deep` for the long run.

    Branch coverage of the deterministic core is enforced at 100% here: the core is where
    every decision lives, so an untested branch there is an untested decision.
    """
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-m",
        "not sidecar",
        "--hypothesis-profile=ci",
        "--cov=certctl.core",
        "--cov-branch",
        "--cov-report=term-missing",
        "--cov-fail-under=100",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Connectors against real servers, and the end-to-end lifecycle (server + agent +
    NGINX over HTTPS): the tests marked ``sidecar``.

    Servers run as containers when a Docker engine answers, otherwise as private local
    processes from the distribution's packages (``.ci/run`` installs them); a server that
    is missing skips with its install command.
    """
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "sidecar", "tests/integration", "tests/e2e", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks print figures and ratios against an in-run baseline; they never fail on time.

    `nox -s bench` runs all of them, `nox -s bench -- core` one of them. The ``load``
    extra brings locust, which drives the HTTPS load of `nox -s bench -- api`.
    """
    session.install("-e", ".[test,load]")
    session.run("python", "-m", "benchmarks", *session.posargs)
