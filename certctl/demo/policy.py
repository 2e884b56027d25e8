"""The demo agents' host policies: each may do exactly what the demo deploys, nothing else.

An agent may write its own File targets' directory (``targets/<agent>``); the agent that
deploys to the demo's NGINX may also write that NGINX's certificate directory and run its
two commands (validate and reload, with the demo's prefix and config). Every other
connector type gets no root and no command, so the demo shows the policy as an operator
should write one: as narrow as the deployments it allows.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

from certctl.agent.policy import BUILT_IN, HostPolicy, Rules
from certctl.core.model import TargetType
from certctl.demo.nginx import DemoNginx

NOTHING = Rules(write_roots=(), commands=(), owners=("root",), groups=("root",))


def agent_policy(targets: Path, state_dir: Path, nginx: DemoNginx | None) -> HostPolicy:
    """``targets``: this agent's File target directories; ``nginx``: the NGINX it deploys
    to, if any."""
    accounts = _accounts()
    rules = dict.fromkeys(BUILT_IN, NOTHING)
    rules[TargetType.FILE] = Rules(
        write_roots=(str(targets),), commands=(), owners=accounts, groups=accounts
    )
    if nginx is not None:
        rules[TargetType.NGINX] = Rules(
            write_roots=(str(nginx.cert_root),),
            commands=(tuple(nginx.validate_argv), tuple(nginx.reload_argv)),
            owners=accounts,
            groups=accounts,
        )
    return HostPolicy(rules, None, (str(state_dir),))


def _accounts() -> tuple[str, ...]:
    """Root and the user (and group) the demo runs as, who owns what the agents write."""
    names = ["root"]
    try:
        names += [pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name]
    except KeyError:
        names += [str(os.getuid()), str(os.getgid())]
    return tuple(dict.fromkeys(names))
