"""docs/configuration.md and the code must name the same variables.

The page is generated from the settings declarations (``certctl.config.reference``), so
the first test is that it is up to date. The code side of the others is every
``CERTCTL_*`` literal in the package source, not just the settings table, so a variable
read anywhere (say, a connector reading the environment) must be documented too.
"""

from __future__ import annotations

import re
from pathlib import Path

from certctl import config
from certctl.config import reference

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
_NAME = re.compile(r"\bCERTCTL_[A-Z0-9_]*[A-Z0-9]\b")


def variables_in_code() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "certctl").rglob("*.py"):
        found |= set(_NAME.findall(path.read_text(encoding="utf-8")))
    return found


def variables_in_doc_tables() -> set[str]:
    rows = (line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `"))
    return {m.group(0) for row in rows if (m := _NAME.search(row.split("|")[1]))}


def test_doc_is_generated_from_the_declarations() -> None:
    assert DOC.read_text(encoding="utf-8") == reference.render(), (
        f"docs/configuration.md is stale; regenerate it with: {reference.REGENERATE}"
    )


def test_every_variable_in_code_is_documented() -> None:
    missing = variables_in_code() - variables_in_doc_tables()
    assert not missing, f"add these to docs/configuration.md: {sorted(missing)}"


def test_every_documented_variable_is_read_by_code() -> None:
    stale = variables_in_doc_tables() - variables_in_code()
    assert not stale, f"documented but never read by the code: {sorted(stale)}"


def test_settings_table_matches_doc_exactly() -> None:
    assert {spec.env for spec in config.SPECS.values()} == variables_in_doc_tables()


def test_documented_example_secrets_are_the_refused_ones() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- example-secrets -->")[1].split("<!-- /example-secrets -->")[0]
    documented = set(re.findall(r"^- `([^`]+)`$", block, flags=re.MULTILINE))
    assert documented == set(config.EXAMPLE_SECRETS)
