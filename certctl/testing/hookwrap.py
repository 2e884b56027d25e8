"""Wrap a deploy hook to count its runs and fail it on purpose (tests only).

``hookwrap RECORD [--fail-once MARKER] -- ARGV...`` runs ARGV, appends a line to
RECORD, and, when MARKER does not exist yet, creates it and exits 1 *after* ARGV ran: a
reload that really reloaded the new files and then reported failure, the hardest case
for a rollback. Standard library only, run as an executable copy
(``certctl.testing.scripts``) with ``-I -S`` so it starts fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

# ``certctl.deploy.Command``, spelled out: run by path, this script cannot import certctl.
Command = tuple[str, ...]


def wrap(argv: Command, record: str, fail_once: str | None = None) -> Command:
    """argv that runs ``argv`` through this script."""
    extra = ("--fail-once", fail_once) if fail_once is not None else ()
    from certctl.testing.scripts import executable  # noqa: PLC0415 - never run as a script

    return (executable(__file__), record, *extra, "--", *argv)


def main(args: Sequence[str]) -> int:
    split = list(args).index("--")
    options, argv = list(args[:split]), list(args[split + 1 :])
    record, marker = options[0], options[2] if options[1:2] == ["--fail-once"] else None
    status = subprocess.run(argv, check=False).returncode  # noqa: S603 - test hook
    with open(record, "a", encoding="utf-8") as handle:
        handle.write(" ".join(argv) + "\n")
    if status == 0 and marker is not None and not os.path.exists(marker):
        open(marker, "x").close()
        print("hookwrap: failing this run on purpose", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
