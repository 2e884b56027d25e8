"""Every import of ours points down DESIGN.md's layer list: one table, every room.

Each room of the package (a subpackage, or a top-level module such as ``cli``) is declared
in ``MAY_IMPORT`` with the rooms it may use; a room that is not declared fails the test, so a
new subpackage cannot arrive without its rule. The harnesses outside the package
(``fleet_sim``, ``loadtest``, ``benchmarks``) use the public pieces, and nothing in
``certctl`` imports them. Imports inside functions and under ``TYPE_CHECKING`` count too:
a lazy import is still a dependency. docs/architecture.md shows the same table, and
``test_the_architecture_page_shows_this_table`` keeps the two from drifting.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "certctl"
HARNESSES = ("fleet_sim", "loadtest", "benchmarks")

#: Rooms any room may use: the version string, the error root and the pure core.
_BASE = frozenset({"certctl", "core"})
_CONTROL_PLANE = frozenset(
    {"protocol", "pki", "deploy", "connectors", "store", "services", "config", "logging"}
)

#: room -> the rooms of ours it may import (besides itself and ``_BASE``).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "protocol": frozenset(),
    "config": frozenset(),
    "logging": frozenset({"config"}),
    "pki": frozenset(),
    "deploy": frozenset({"pki"}),
    "connectors": frozenset({"pki", "deploy"}),
    "store": frozenset({"pki", "config", "logging"}),
    "services": frozenset({"protocol", "pki", "deploy", "connectors", "store", "logging"}),
    "server.routes": frozenset({"protocol", "services", "logging"}),
    "server": _CONTROL_PLANE,
    "agent": frozenset({"protocol", "pki", "deploy", "connectors", "config", "logging"}),
    "healthcheck": frozenset({"agent", "config", "logging"}),
    "testing": _CONTROL_PLANE | {"server", "agent"},
    "demo": _CONTROL_PLANE | {"server", "agent", "testing"},
    "cli": _CONTROL_PLANE | {"server", "agent", "healthcheck", "demo"},
    "__main__": frozenset({"cli"}),
}

#: What a harness outside the package must not reach into: the other harnesses' insides
#: are theirs, and the tests are not a library.
_NOT_FOR_HARNESSES = ("tests",)


def room_of(module: str) -> str | None:
    """The room a dotted module name belongs to, or None when it is not ours."""
    parts = module.split(".")
    if parts[0] in HARNESSES or parts[0] == "tests":
        return parts[0]
    if parts[0] != "certctl":
        return None
    if len(parts) == 1:
        return "certctl"
    if parts[1:3] == ["server", "routes"]:
        return "server.routes"
    return parts[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(module: str, *, is_package: bool, source: str) -> Iterator[str]:
    """Every module ``source`` (the text of ``module``) imports, relative imports resolved
    and ``from certctl import x`` read as ``certctl.x`` (how a submodule is imported)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *filter(None, [node.module])])
            if name == "certctl":
                yield from (_from_the_package(alias.name) for alias in node.names)
            else:
                yield name


def _from_the_package(name: str) -> str:
    """``from certctl import x``: a submodule when ``x`` is one, else a name of the package."""
    is_module = (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()
    return f"certctl.{name}" if is_module else "certctl"


def forbidden(module: str, *, is_package: bool, source: str) -> list[str]:
    """The imports of ``module`` that its room's rule does not allow."""
    source_room = room_of(module)
    assert source_room is not None
    return [
        name
        for name in imported(module, is_package=is_package, source=source)
        if (target := room_of(name)) is not None
        and target != source_room
        and not allowed(source_room, target)
    ]


def allowed(source: str, target: str) -> bool:
    """A sub-room (``server.routes``) and its parent are one room to each other; for anyone
    else the parent's permission covers the sub-room unless the rule names it."""
    if target == "tests":
        return False
    if source in HARNESSES:
        return target not in HARNESSES
    if target in HARNESSES:
        return False
    if target.split(".", maxsplit=1)[0] == source.split(".", maxsplit=1)[0]:
        return True
    rule = MAY_IMPORT[source] | _BASE
    return target in rule or target.split(".", maxsplit=1)[0] in rule


def violations(paths: list[Path]) -> dict[str, list[str]]:
    found = {}
    for path in paths:
        module = module_name(path)
        source = path.read_text(encoding="utf-8")
        if bad := forbidden(module, is_package=path.name == "__init__.py", source=source):
            found[module] = bad
    return found


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def harness_files() -> list[Path]:
    return sorted(
        p for name in HARNESSES if (REPO / name).is_dir() for p in (REPO / name).rglob("*.py")
    )


def test_every_room_of_the_package_has_a_rule() -> None:
    rooms = {room_of(module_name(path)) for path in package_files()}
    assert rooms - {"certctl"} == set(MAY_IMPORT)


def test_the_table_points_down_only() -> None:
    """No two rooms may import each other, directly or through a chain."""

    def reach(room: str, seen: frozenset[str] = frozenset()) -> frozenset[str]:
        assert room not in seen, f"the table has a cycle through {room}"
        below = MAY_IMPORT.get(room, frozenset()) - _BASE
        return below.union(*(reach(r, seen | {room}) for r in below)) if below else below

    for room in MAY_IMPORT:
        reach(room)


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_each_room_imports_only_what_its_rule_allows(room: str) -> None:
    paths = [p for p in package_files() if room_of(module_name(p)) == room]
    assert paths, f"room {room} has no module; drop it from MAY_IMPORT"
    assert violations(paths) == {}


def test_the_harnesses_use_the_package_and_nothing_of_each_other() -> None:
    assert violations(harness_files()) == {}


@pytest.mark.parametrize(
    ("module", "source", "bad"),
    [
        (
            "certctl.core.probe",
            "import certctl.pki.pem\nfrom certctl.core import jobs\n",
            ["certctl.pki.pem"],
        ),
        (
            "certctl.server.routes.probe",
            "from certctl.store.errors import NotFound\n",
            ["certctl.store.errors"],
        ),
        ("certctl.server.routes.probe", "from ...store import base\n", ["certctl.store"]),
        (
            "certctl.server.routes.probe",
            "from .. import auth\nfrom certctl.services import jobs\n",
            [],
        ),
        (
            "certctl.agent.probe",
            "def f():\n    from certctl.server import app\n",
            ["certctl.server"],
        ),
        ("certctl.testing.probe", "from certctl import demo, core\n", ["certctl.demo"]),
        ("certctl.store.probe", "from certctl.services import jobs\n", ["certctl.services"]),
        (
            "certctl.deploy.probe",
            "from certctl.connectors import targets\n",
            ["certctl.connectors"],
        ),
        ("certctl.services.probe", "import fleet_sim.run\n", ["fleet_sim.run"]),
        (
            "benchmarks.probe",
            "from tests.waiting import wait_for\nimport certctl.store\n",
            ["tests.waiting"],
        ),
        ("certctl.protocol", "from certctl.core.model import Job\nimport pydantic\n", []),
        ("certctl.protocol", "from certctl.pki import pem\n", ["certctl.pki"]),
    ],
)
def test_the_checker_flags_what_it_must(module: str, source: str, bad: list[str]) -> None:
    assert forbidden(module, is_package=False, source=source) == bad


def test_the_architecture_page_shows_this_table() -> None:
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    shown: dict[str, frozenset[str]] = {}
    for room, names in re.findall(r"^\| `([\w.]+)` \| ([^|]*) \|", page, flags=re.MULTILINE):
        shown[room] = frozenset(re.findall(r"`([\w.]+)`", names)) - _BASE
    assert shown == MAY_IMPORT


#: Decisions whose results are stored: the store is handed them (``DomainRules``) by the
#: services and never imports them, so it cannot pick its own.
STORED_DECISIONS = {
    ("certctl.core.renewal", "renewal_due_at"),
    ("certctl.core.jobs", "transition"),
    ("certctl.core.jobs", "Claimed"),
}


def decisions_imported(source: str) -> set[tuple[str, str]]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {(node.module, alias.name) for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {(alias.name, "*") for alias in node.names}
    return {
        (module, name)
        for module, name in found
        if (module, name) in STORED_DECISIONS or (name == "*" and module == "certctl.core.renewal")
    }


def test_the_checker_finds_a_stored_decision() -> None:
    source = "from certctl.core.jobs import Claimed, is_retry_due\nimport certctl.core.renewal\n"
    assert decisions_imported(source) == {
        ("certctl.core.jobs", "Claimed"),
        ("certctl.core.renewal", "*"),
    }


def test_the_store_imports_no_decision_it_stores() -> None:
    offenders = {
        module_name(path): found
        for path in sorted((PACKAGE / "store").rglob("*.py"))
        if (found := decisions_imported(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
