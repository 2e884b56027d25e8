"""``certctl.core`` imports only the standard library and itself, so it stays pure and every
layer above can depend on it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import certctl.core

CORE = Path(certctl.core.__file__).parent


def foreign_imports(source: str) -> list[str]:
    """Modules imported by ``source`` (a module of ``certctl.core``) that are neither stdlib
    nor ``certctl.core``; relative imports are resolved against ``certctl.core``."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            package = ["certctl", "core"][: 3 - node.level] if node.level else []
            names.append(".".join([*package, *filter(None, [node.module])]))
    return [name for name in names if not allowed(name)]


def allowed(module: str) -> bool:
    top = module.split(".", maxsplit=1)[0]
    return (
        module == "certctl.core"
        or module.startswith("certctl.core.")
        or top == "__future__"
        or top in sys.stdlib_module_names
    )


def test_the_checker_flags_what_it_must() -> None:
    source = """
import trio
import certctl.pki.pem
from certctl import config
from . import jobs
from .. import pki
from ..pki.pem import decode
from cryptography.x509 import load_pem_x509_certificate
import datetime, certctl.core.jobs
from __future__ import annotations
from collections.abc import Mapping
from certctl.core.model import Job
"""
    assert foreign_imports(source) == [
        "trio",
        "certctl.pki.pem",
        "certctl",
        "certctl",
        "certctl.pki.pem",
        "cryptography.x509",
    ]


def test_core_imports_only_the_standard_library_and_itself() -> None:
    modules = sorted(CORE.glob("*.py"))
    assert {path.name for path in modules} >= {
        "agents.py",
        "backoff.py",
        "clock.py",
        "jobs.py",
        "model.py",
        "renewal.py",
    }
    offenders = {
        path.name: found
        for path in modules
        if (found := foreign_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
