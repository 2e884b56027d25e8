"""``certctl.deploy`` sits below connectors: it imports ``core``, ``pki`` and itself only."""

from __future__ import annotations

import ast
from pathlib import Path

import certctl.deploy

DEPLOY = Path(certctl.deploy.__file__).parent
ALLOWED = ("certctl.core", "certctl.pki", "certctl.deploy")


def ours_above(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append("relative" if node.level else str(node.module))
    return [
        name
        for name in found
        if name == "relative" or (name.startswith("certctl") and not name.startswith(ALLOWED))
    ]


def test_the_checker_flags_upward_and_relative_imports() -> None:
    source = "import certctl.store\nfrom certctl.testing import faults\nfrom . import plan\n"
    assert ours_above(source) == ["certctl.store", "certctl.testing", "relative"]


def test_deploy_imports_nothing_above_it() -> None:
    offenders = {
        path.name: found
        for path in sorted(DEPLOY.glob("*.py"))
        if (found := ours_above(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
