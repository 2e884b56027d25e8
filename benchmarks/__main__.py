"""`python -m benchmarks [NAME ...]`: run the named benchmark modules, or all of them.

A benchmark is a module in this package with a ``run() -> None`` that prints its figures
and the ratio to a baseline it measured itself. Nothing here asserts on timing.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = available()
    # Module names are identifiers; on the command line a benchmark may be spelled with
    # dashes (``fleet-api``).
    chosen = [n.replace("-", "_") for n in argv] or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from: {', '.join(names)}")
        return 2
    for name in chosen:
        print(f"== {name} ==", flush=True)
        importlib.import_module(f"benchmarks.{name}").run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
