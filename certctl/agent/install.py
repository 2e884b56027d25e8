"""``certctl agent install``: the three files that make this host's agent a systemd service.

``plan`` turns the operator's answers into the files (path, mode, content) and refuses bad
input before anything is written, so a dry run shows exactly what a real run would write
and a refused run leaves the host as it was. ``write`` then puts each file in place with
``write_atomic``: a reader (systemd, the agent) sees the old file or the new one, whole,
and the env file holding the bootstrap token is never readable by others, not even while
it is being written.

The files are the env file (root's, 0600: systemd reads it before it drops to the
``certctl`` user), the built-in host policy spelled out (root's, 0644, in a directory only
root can write, as ``load_policy`` requires) and the unit shipped in this package, the one
copy of ``deploy/systemd/certctl-agent.service``. Enabling the service stays the
operator's step: it needs the ``certctl`` user and this host's ``ReadWritePaths`` first.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Final

from certctl.agent.connection import (
    CA_BUNDLE_VAR,
    URL_VAR,
    check_server_url,
    client_ssl_context,
)
from certctl.agent.policy import BUILT_IN, HostPolicy
from certctl.config import ConfigError, Role, load, validate
from certctl.deploy import write_atomic

TOKEN_VAR: Final = "CERTCTL_AGENT_BOOTSTRAP_TOKEN"  # noqa: S105 - a variable name, not a token
NAME_VAR: Final = "CERTCTL_AGENT_NAME"
UNIT_NAME: Final = "certctl-agent.service"
ENV_PATH: Final = PurePosixPath("/etc/certctl/agent.env")
POLICY_PATH: Final = PurePosixPath("/etc/certctl/agent-policy.toml")
UNIT_PATH: Final = PurePosixPath("/etc/systemd/system") / UNIT_NAME
NEXT_COMMAND: Final = "systemctl daemon-reload && systemctl enable --now certctl-agent"
REDACTED: Final = "<redacted>"
_MAX_NAME = 255  # what the control plane accepts as an agent name

_OPTIONS: Final[Mapping[str, str]] = {
    URL_VAR: "--server-url",
    TOKEN_VAR: "--token/--token-file",
    CA_BUNDLE_VAR: "--ca-bundle",
    NAME_VAR: "--name",
}
"""Which option sets each variable, so a refusal names what the operator typed."""


class InstallRefused(ConfigError):
    """An answer cannot make a working agent, or a file is in the way; ``variable`` is the
    option at fault and the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Answers:
    """What the operator gave ``certctl agent install``."""

    server_url: str
    token: str
    ca_bundle: Path | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class InstallFile:
    """One file to write: where (under the prefix), its mode, its bytes, and what a dry
    run may show of them (the bootstrap token redacted)."""

    path: Path
    mode: int
    content: bytes
    shown: str


def read_token(path: Path) -> str:
    """The bootstrap token in ``path`` (one line; the trailing newline is not part of it)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InstallRefused(
            "--token-file",
            f"--token-file {path} cannot be read ({reason}); give the file that holds the "
            "control plane's bootstrap token.",
        ) from None


def plan(answers: Answers, *, prefix: Path, force: bool, now: datetime) -> tuple[InstallFile, ...]:
    """The env file, the host policy and the unit, under ``prefix``, in the order to write
    them (the unit last, so it never exists without its env file); ``InstallRefused`` for
    bad answers, or for a file that exists when ``force`` is false."""
    env = _env_values(answers, now)
    made = (
        _env_file(prefix, env),
        _file(prefix, POLICY_PATH, 0o644, _policy_text()),
        _file(prefix, UNIT_PATH, 0o644, unit_text()),
    )
    _check_place(made, force=force)
    return made


def write(made: Sequence[InstallFile]) -> None:
    """Each file atomically, creating missing directories 0755 (root's when run as root)."""
    for item in made:
        _make_dirs(item.path.parent)
        write_atomic(item.path, item.content, item.mode)


def unit_text() -> str:
    """The agent's unit as this package ships it."""
    return files("certctl.agent").joinpath(UNIT_NAME).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the env file


def _env_values(answers: Answers, now: datetime) -> dict[str, str]:
    """The env file's variables, checked as the agent will check them at start."""
    try:
        url = check_server_url(answers.server_url)
    except ConfigError as exc:
        raise _refused(exc) from None
    values = {URL_VAR: url, TOKEN_VAR: answers.token.strip()}
    if answers.ca_bundle is not None:
        values[CA_BUNDLE_VAR] = str(answers.ca_bundle.absolute())
    values[NAME_VAR] = (answers.name or socket.gethostname()).strip()
    for variable, value in values.items():
        _check_line(variable, value)
    if len(values[NAME_VAR]) > _MAX_NAME:
        raise InstallRefused(
            "--name", f"--name is longer than {_MAX_NAME} characters; give a shorter name."
        )
    try:
        validate(load(values), role=Role.AGENT, now=now)
        if answers.ca_bundle is not None:
            client_ssl_context(Path(values[CA_BUNDLE_VAR]), insecure=False)
    except ConfigError as exc:
        raise _refused(exc) from None
    return values


def _check_line(variable: str, value: str) -> None:
    """A value systemd and ``read_env_file`` read back unchanged: no quotes, escapes,
    spaces or control characters, which each would interpret differently. Never quotes
    the value: it may be the token."""
    option = _OPTIONS[variable]
    if not value:
        raise InstallRefused(option, f"{option} is empty; give a value.")
    if any(not c.isprintable() or c.isspace() or c in "\"'\\" for c in value):
        raise InstallRefused(
            option,
            f"{option} contains a space, quote, backslash or control character, which the "
            "env file cannot hold unquoted; give a value without them.",
        )


def _refused(exc: ConfigError) -> InstallRefused:
    option = _OPTIONS.get(exc.variable, exc.variable)
    return InstallRefused(option, f"{option}: {exc}")


def _env_file(prefix: Path, values: Mapping[str, str]) -> InstallFile:
    header = [
        "# Written by `certctl agent install`; read by systemd (EnvironmentFile=) and by",
        "# `certctl agent --env-file`. It holds the bootstrap token: keep it root's, 0600.",
    ]

    def render(shown: Mapping[str, str]) -> str:
        return "\n".join([*header, *(f"{k}={v}" for k, v in shown.items())]) + "\n"

    text = render(values)
    return InstallFile(
        _under(prefix, ENV_PATH), 0o600, text.encode(), render({**values, TOKEN_VAR: REDACTED})
    )


# --------------------------------------------------------------------------- the others


def _policy_text() -> str:
    """The built-in policy spelled out by ``HostPolicy.describe``, as the file it becomes."""
    policy = HostPolicy(dict(BUILT_IN), Path(POLICY_PATH))
    lines = [
        "# Written by `certctl agent install`: the built-in policy. Narrow it to what this",
        '# host deploys (docs/agent.md, "Host policy"); keep it root\'s, 0644.',
        *policy.describe(),
    ]
    return "\n".join(lines) + "\n"


def _file(prefix: Path, path: PurePosixPath, mode: int, text: str) -> InstallFile:
    return InstallFile(_under(prefix, path), mode, text.encode(), text)


def _under(prefix: Path, path: PurePosixPath) -> Path:
    return prefix / path.relative_to("/")


def _check_place(made: Sequence[InstallFile], *, force: bool) -> None:
    """Refuse before writing anything: files in the way, or a directory others could use
    to swap a file (the agent would refuse such a policy at start anyway)."""
    present = [str(item.path) for item in made if os.path.lexists(item.path)]
    if present and not force:
        verb, them = ("exists", "it") if len(present) == 1 else ("exist", "them")
        raise InstallRefused(
            "--force", f"{' and '.join(present)} {verb}; pass --force to overwrite {them}."
        )
    for folder in sorted({item.path.parent for item in made}):
        if folder.is_dir() and folder.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InstallRefused(
                "--prefix",
                f"{folder} is writable by its group or others, who could replace what is "
                f"written there; chmod go-w {folder} first.",
            )


def _make_dirs(folder: Path) -> None:
    if folder.is_dir():
        return
    _make_dirs(folder.parent)
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)  # mkdir's mode is masked by the umask
