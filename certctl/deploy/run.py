"""Validate and reload commands: argv lists run without a shell.

A target config holds a command as one string; ``parse_command`` splits it with ``shlex``
and refuses shell syntax, because without a shell ``a && b`` would silently run ``a`` with
the arguments ``&&`` and ``b`` instead of what the operator meant.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from typing import Protocol

from certctl.core.errors import CertctlError
from certctl.core.text import bound_free_text

Command = tuple[str, ...]

MAX_COMMAND_CHARS = 1024
# Kept in errors so a failed ``nginx -t`` explains itself, bounded (head and tail, the
# middle cut with a marker) so a chatty command cannot bloat job reports.
MAX_OUTPUT_CHARS = 4000

_OPERATOR_CHARS = frozenset("();<>|&")


class CommandInvalid(CertctlError, ValueError):
    """A configured command string that cannot be run safely without a shell."""


class CommandFailed(CertctlError):
    """A command exited non-zero, timed out or could not start; ``output`` is what it
    printed, bounded."""

    def __init__(self, argv: Command, reason: str, output: str) -> None:
        kept = bound_free_text(output.strip(), MAX_OUTPUT_CHARS)
        super().__init__(f"{shlex.join(argv)} {reason}" + (f" (output: {kept})" if kept else ""))
        self.argv = argv
        self.reason = reason
        self.output = kept


class Runner(Protocol):
    """Runs one command to completion; raises ``CommandFailed`` unless it exits 0."""

    def run(self, argv: Command, timeout: float) -> str: ...


class SubprocessRunner:
    """The real runner: no shell, no stdin, stderr folded into stdout, hard timeout.

    The child gets its own session so that on timeout the whole process group is killed;
    otherwise a grandchild holding the output pipe would keep us waiting past the timeout.
    """

    def run(self, argv: Command, timeout: float) -> str:
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list from a checked plan, no shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandFailed(argv, f"could not start: {exc.strerror}", "") from exc
        with proc:
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
                raise CommandFailed(
                    argv, f"timed out after {timeout:g} s", out.decode(errors="replace")
                ) from None
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise CommandFailed(argv, f"exited with status {proc.returncode}", text)
        return text


def parse_command(text: str, field: str = "command") -> Command:
    """Split a configured command string into argv, refusing anything a shell would interpret.

    ``field`` names the config setting in error messages.
    """
    if len(text) > MAX_COMMAND_CHARS:
        raise CommandInvalid(
            f"{field} is {len(text)} characters, over {MAX_COMMAND_CHARS}; "
            "put long logic in a script and give its path."
        )
    if any(ch in text for ch in "\x00\r\n"):
        raise CommandInvalid(f"{field} contains a control character; write it on one line.")
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        argv = tuple(lexer)
    except ValueError as exc:
        raise CommandInvalid(
            f"{field} does not split into arguments ({exc}); fix the quoting."
        ) from exc
    if not argv:
        raise CommandInvalid(
            f"{field} is empty; give the program and its arguments, e.g. 'nginx -s reload'."
        )
    for token in argv:
        if set(token) <= _OPERATOR_CHARS or "$" in token or "`" in token:
            raise CommandInvalid(
                f"{field} contains shell syntax {token!r} but commands run without a shell; "
                "put the pipeline in a script and give the script's path."
            )
    return argv
