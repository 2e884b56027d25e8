"""Routes only translate (DESIGN layering): parse, call one service, encode.

So a route module imports the services, the protocol messages, the core values and the
server's own plumbing, and nothing else of ours: reaching the store (or a connector, the
PKI, the deploy engine) from a route would be a use case living in HTTP code, out of
reach of every other caller. ``certctl.protocol`` in turn imports nothing of ours but
``certctl.core``, so the agent can use it without the control plane's code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import certctl.protocol
import certctl.server.routes

ROUTES = Path(certctl.server.routes.__file__).parent
ROUTES_MAY_IMPORT = ("certctl.services", "certctl.protocol", "certctl.core", "certctl.server")


def ours(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append("relative" if node.level else str(node.module))
    return [name for name in found if name == "relative" or name.startswith("certctl")]


def test_routes_import_only_services_protocol_core_and_server() -> None:
    offenders = {
        path.name: bad
        for path in sorted(ROUTES.glob("*.py"))
        if (bad := [name for name in ours(path) if not name.startswith(ROUTES_MAY_IMPORT)])
    }
    assert offenders == {}


def test_the_protocol_imports_only_core() -> None:
    found = ours(Path(certctl.protocol.__file__))
    assert [name for name in found if not name.startswith("certctl.core")] == []
