"""``certctl.agent`` talks to the control plane only through its ``ControlPlane`` protocol.

It must never import the server, the store or the services (DESIGN layering): an agent
host has no database and no business holding the control plane's code paths.
"""

from __future__ import annotations

import ast
from pathlib import Path

import certctl.agent

AGENT = Path(certctl.agent.__file__).parent
FORBIDDEN = (
    "certctl.server",
    "certctl.store",
    "certctl.services",
    "certctl.testing",
    "certctl.cli",
)


def imported(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append("relative" if node.level else str(node.module))
    return found


def test_the_agent_imports_nothing_of_the_control_plane() -> None:
    offenders = {
        path.name: bad
        for path in sorted(AGENT.glob("*.py"))
        if (
            bad := [
                name
                for name in imported(path.read_text(encoding="utf-8"))
                if name == "relative" or name.startswith(FORBIDDEN)
            ]
        )
    }
    assert offenders == {}
