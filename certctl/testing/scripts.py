"""Test hooks as executables, because a target's command may not name an interpreter.

Connectors refuse ``python``, ``sh`` and their kind as the program of a command (a
control plane must not hand an agent code to run), so a hook written in Python runs the
way an operator's script would: an executable file with a ``#!`` line. ``executable``
copies a standard-library-only module of ``certctl.testing`` into a private directory of
this process behind a shebang for this interpreter (isolated mode, no site packages, as
the hooks need neither), once per process.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path


@functools.cache
def _directory() -> Path:
    return Path(tempfile.mkdtemp(prefix="certctl-test-hooks-"))


@functools.cache
def executable(module_file: str) -> str:
    """The path of an executable copy of ``module_file`` (run as ``__main__``)."""
    source = Path(module_file)
    target = _directory() / source.stem
    target.write_text(f"#!{sys.executable} -IS\n" + source.read_text(encoding="utf-8"))
    os.chmod(target, 0o700)
    return str(target)
