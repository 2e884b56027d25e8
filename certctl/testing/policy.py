"""Host policies for tests: what a test's agent may write and run, and nothing more.

Tests deploy into temporary directories and run hooks of their own, which the built-in
policy rightly refuses. ``allowing`` builds the policy such a test needs as an object;
``write_policy`` (the agent's own) writes it as a ``CERTCTL_AGENT_POLICY_FILE`` for tests
that start an agent process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from certctl.agent.policy import BUILT_IN, HostPolicy, Rules, write_policy

__all__ = ["allowing", "rules_allowing", "write_policy"]

Argv = Sequence[str]


def _accounts() -> tuple[str, ...]:
    """Every service account of the built-in policy (connectors give new files to them),
    and the user running the tests (an agent not run as root owns what it writes)."""
    import pwd  # noqa: PLC0415 - Unix only

    names = [name for rules in BUILT_IN.values() for name in (*rules.owners, *rules.groups)]
    return tuple(dict.fromkeys((*names, pwd.getpwuid(os.geteuid()).pw_name)))


def rules_allowing(
    roots: Iterable[str | Path],
    commands: Iterable[Argv] = (),
    prefixes: Iterable[Argv] = (),
) -> Rules:
    accounts = _accounts()
    return Rules(
        write_roots=tuple(str(Path(r)) for r in roots),
        commands=tuple(tuple(c) for c in commands),
        command_prefixes=tuple(tuple(p) for p in prefixes),
        owners=accounts,
        groups=accounts,
    )


def allowing(
    roots: Iterable[str | Path],
    commands: Iterable[Argv] = (),
    prefixes: Iterable[Argv] = (),
    *,
    state_dir: str | Path | None = None,
) -> HostPolicy:
    """Every connector may write under ``roots`` and run ``commands`` (exact argv) or
    anything starting with one of ``prefixes``; ``state_dir`` stays protected."""
    rules = rules_allowing(roots, commands, prefixes)
    protected = () if state_dir is None else (str(Path(state_dir).absolute()),)
    return HostPolicy(dict.fromkeys(BUILT_IN, rules), None, protected)
