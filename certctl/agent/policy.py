"""The host policy: what this host lets the control plane make its agent do.

The control plane decides *which* certificate goes *where*; the host decides what that may
involve. Before a deploy writes a file or runs a command, ``HostPolicy.check`` compares its
plan with the policy and refuses, naming the policy key to change, any

- path outside the connector's ``write_roots`` (checked as written and with symbolic links
  resolved, and never inside the agent's own state directory, whatever the roots say);
- command that is not one of its ``commands`` (exact argv) or does not start with one of
  its ``command_prefixes``;
- owner or group not in its ``owners`` / ``groups``;
- mode above its ``max_mode`` (``max_key_mode`` for files holding the private key), or
  with the setuid, setgid or sticky bit, which no policy can allow.

A dry run's probe (the server's own binary loading staged files) may run a program only
if an allowed command of the connector runs the same program.

The policy is ``CERTCTL_AGENT_POLICY_FILE`` (TOML), or built-in defaults without it: the
conventional layout and commands of each connector, documented in docs/agent.md. The file
must be a regular file owned by root (or by the agent's own user) and writable by nobody
else, in a directory nobody else can write to; otherwise the agent refuses to start. Its
keys override the defaults: ``[defaults]`` for every connector, ``[connectors.<type>]``
for one, the more specific winning.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from certctl.config import ConfigError, Settings
from certctl.connectors.targets.base import TargetConfigInvalid
from certctl.connectors.targets.fields import SPECIAL_BITS, parse_mode
from certctl.connectors.targets.registry import CONNECTORS, target_type
from certctl.core.model import TargetType
from certctl.deploy import Command, CommandInvalid, FileRole, Plan, PolicyRefused, parse_command

VARIABLE: Final = "CERTCTL_AGENT_POLICY_FILE"
PYTHON: Final = "{python}"
"""Stands for this agent's own interpreter in a policy command (the Caddy admin hook)."""
SHARED_ROOT: Final = "/etc/ssl/certctl"
KEY_ROLES: Final = frozenset({FileRole.KEY, FileRole.COMBINED})


@dataclass(frozen=True, slots=True)
class Rules:
    """What one connector type may do on this host."""

    write_roots: tuple[str, ...] = (SHARED_ROOT,)
    commands: tuple[Command, ...] = ()
    command_prefixes: tuple[Command, ...] = ()
    owners: tuple[str, ...] = ("root",)
    groups: tuple[str, ...] = ("root",)
    max_mode: int = 0o644
    max_key_mode: int = 0o640


def _rules(
    roots: Sequence[str],
    commands: Sequence[str],
    accounts: Sequence[str],
    hooks: Sequence[Command] = (),
) -> Rules:
    names = ("root", *accounts)
    return Rules(
        write_roots=(*roots, SHARED_ROOT),
        commands=(*(tuple(c.split()) for c in commands), *hooks),
        owners=names,
        groups=(*names, "ssl-cert"),
    )


_CADDY_ADMIN_HOOKS: Final = tuple(
    (PYTHON, "-m", "certctl.connectors.targets.caddy_admin", action, address)
    for action in ("reload", "check")
    for address in ("http://localhost:2019", "http://127.0.0.1:2019")
)
"""Caddy's default mode reaches its admin API through a module of ours, run by this
interpreter: allowed for the loopback admin address only."""

BUILT_IN: Final[Mapping[TargetType, Rules]] = {
    TargetType.NGINX: _rules(
        ["/etc/nginx"],
        ["nginx -t", "nginx -t -q", "nginx -s reload", "systemctl reload nginx"],
        ["nginx", "www-data"],
    ),
    TargetType.APACHE: _rules(
        ["/etc/apache2", "/etc/httpd"],
        [
            "apachectl configtest",
            "apachectl graceful",
            "apache2ctl configtest",
            "apache2ctl graceful",
            "systemctl reload apache2",
            "systemctl reload httpd",
        ],
        ["apache", "www-data", "httpd"],
    ),
    TargetType.HAPROXY: _rules(
        ["/etc/haproxy"],
        ["haproxy -c -f /etc/haproxy/haproxy.cfg", "systemctl reload haproxy"],
        ["haproxy"],
    ),
    TargetType.TRAEFIK: _rules(["/etc/traefik"], [], ["traefik"]),
    TargetType.CADDY: _rules(
        ["/etc/caddy", "/var/lib/caddy"],
        [
            "caddy reload --config /etc/caddy/Caddyfile --force",
            "caddy validate --config /etc/caddy/Caddyfile",
            "systemctl reload caddy",
        ],
        ["caddy"],
        _CADDY_ADMIN_HOOKS,
    ),
    TargetType.ENVOY: _rules(["/etc/envoy"], [], ["envoy"]),
    TargetType.POSTFIX: _rules(
        ["/etc/postfix"],
        ["postfix check", "postfix reload", "systemctl reload postfix"],
        ["postfix", "_postfix"],
    ),
    TargetType.DOVECOT: _rules(
        ["/etc/dovecot"],
        ["doveconf -n", "doveadm reload", "systemctl reload dovecot"],
        ["dovecot"],
    ),
    TargetType.FILE: _rules([], [], []),
}

_KEYS: Final = tuple(f.name for f in fields(Rules))


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The effective policy: each connector's rules, where they came from, and the state
    directory no deploy may write into."""

    rules: Mapping[TargetType, Rules]
    source: Path | None
    protected: tuple[str, ...] = ()

    # -- the checks (``certctl.connectors.targets.base.Guard``) -------------------------

    def check(self, target_type: TargetType, plan: Plan) -> None:
        rules = self.rules[target_type]
        where = _Where(self, target_type)
        defaults = plan.defaults
        for item in plan.files:
            self._check_path(where, rules, item.path)
            # What a new file would get: its own mode and owner, else the plan's defaults
            # (an existing file keeps its own, which the host set, not the control plane).
            mode = item.mode if item.mode is not None else defaults.mode
            if mode is not None:
                _check_mode(where, rules, item.path, mode, key=item.role in KEY_ROLES)
            owner, group = (
                (item.owner, item.group)
                if item.owner is not None
                else (defaults.owner, defaults.group)
            )
            _check_accounts(where, rules, item.path, owner, group)
        for label, argv in (("validate", plan.validate), ("reload", plan.reload)):
            if argv is not None and not _allowed(rules, argv):
                raise PolicyRefused(
                    f"the host policy refuses the {label} command {_show(argv)} of this "
                    f"{target_type.value} target: it is not in {where.key('commands')} or "
                    f"{where.key('command_prefixes')} {where.source}; add it there if this "
                    "host should run it, or change the target's command."
                )

    def check_probe(self, target_type: TargetType, argv: Command) -> None:
        rules = self.rules[target_type]
        if any(_same_program(argv[0], c[0]) for c in (*rules.commands, *rules.command_prefixes)):
            return
        where = _Where(self, target_type)
        raise PolicyRefused(
            f"the host policy refuses to run {argv[0]!r} for the dry run of this "
            f"{target_type.value} target: no command in {where.key('commands')} "
            f"{where.source} runs that program; set the target's binary to the server's "
            "program or allow a command of it."
        )

    def _check_path(self, where: _Where, rules: Rules, path: str) -> None:
        resolved = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        for candidate in {path, resolved}:
            for guarded in self.protected:
                if _under(candidate, guarded) or _under(candidate, os.path.realpath(guarded)):
                    raise PolicyRefused(
                        f"the host policy refuses to write {path}: it is inside the agent's "
                        f"state directory {guarded}, which holds its key; change the "
                        "target's path."
                    )
        roots = rules.write_roots
        if not any(_under(path, r) for r in roots) or not any(
            _under(resolved, os.path.realpath(r)) for r in roots
        ):
            shown = ", ".join(roots) or "none"
            via = "" if resolved == path else f" (resolved to {resolved})"
            raise PolicyRefused(
                f"the host policy refuses to write {path}{via}: it is outside "
                f"{where.key('write_roots')} ({shown}) {where.source}; add a root there or "
                "change the target's path."
            )

    # -- what ``certctl agent policy show`` prints ---------------------------------------

    def describe(self) -> Iterator[str]:
        """The effective policy as TOML lines, every connector and key spelled out."""
        yield f"# effective host policy ({_origin(self.source)})"
        if self.protected:
            yield f"# never written: {', '.join(self.protected)} (the agent's state directory)"
        for kind in CONNECTORS:
            rules = self.rules[kind]
            yield ""
            yield f"[connectors.{kind.value.lower()}]"
            yield f"write_roots = {_toml(list(rules.write_roots))}"
            yield f"commands = {_toml([list(c) for c in rules.commands])}"
            yield f"command_prefixes = {_toml([list(c) for c in rules.command_prefixes])}"
            yield f"owners = {_toml(list(rules.owners))}"
            yield f"groups = {_toml(list(rules.groups))}"
            yield f'max_mode = "{rules.max_mode:04o}"'
            yield f'max_key_mode = "{rules.max_key_mode:04o}"'


@dataclass(frozen=True, slots=True)
class _Where:
    """How a refusal names the key to change and the policy it is in."""

    policy: HostPolicy
    target_type: TargetType

    def key(self, name: str) -> str:
        return f"connectors.{self.target_type.value.lower()}.{name}"

    @property
    def source(self) -> str:
        if self.policy.source is None:
            return f"of the built-in policy (set {VARIABLE} to a policy file that changes it)"
        return f"of {self.policy.source}"


def _check_mode(where: _Where, rules: Rules, path: str, mode: int, *, key: bool) -> None:
    if mode & SPECIAL_BITS:
        raise PolicyRefused(
            f"the host policy refuses mode {mode:04o} for {path}: setuid, setgid and sticky "
            "bits are never allowed; give plain permission bits like 0644."
        )
    limit, name = (rules.max_key_mode, "max_key_mode") if key else (rules.max_mode, "max_mode")
    if mode & ~limit:
        raise PolicyRefused(
            f"the host policy refuses mode {mode:04o} for {path}: it exceeds "
            f"{where.key(name)} ({limit:04o}) {where.source}; lower the target's mode or "
            "raise that limit."
        )


def _check_accounts(
    where: _Where, rules: Rules, path: str, owner: str | None, group: str | None
) -> None:
    for kind, name, allowed in (("owner", owner, rules.owners), ("group", group, rules.groups)):
        if name is None or _account_in(name, allowed, kind):
            continue
        key = "owners" if kind == "owner" else "groups"
        raise PolicyRefused(
            f"the host policy refuses {kind} {name!r} for {path}: it is not in "
            f"{where.key(key)} ({', '.join(allowed) or 'none'}) {where.source}; add it there "
            "or change the target's owner."
        )


def _account_in(name: str, allowed: Sequence[str], kind: str) -> bool:
    """By name or by numeric id, so ``33`` matches an allowed ``www-data`` and back."""
    wanted = _account_id(name, kind)
    return any(
        name == other or (wanted is not None and wanted == _account_id(other, kind))
        for other in allowed
    )


def _account_id(name: str, kind: str) -> int | None:
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid if kind == "owner" else grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _allowed(rules: Rules, argv: Command) -> bool:
    def same(allowed: Command, given: Sequence[str]) -> bool:
        return (
            len(allowed) == len(given)
            and _same_program(given[0], allowed[0])
            and tuple(given[1:]) == allowed[1:]
        )

    return any(same(c, argv) for c in rules.commands) or any(
        len(argv) >= len(p) and same(p, argv[: len(p)]) for p in rules.command_prefixes
    )


def _same_program(given: str, allowed: str) -> bool:
    """The same program: as written, or the same file once PATH and links are resolved."""
    allowed = sys.executable if allowed == PYTHON else allowed
    if given == allowed:
        return True
    a, b = _resolve(given), _resolve(allowed)
    return a is not None and a == b


def _resolve(program: str) -> str | None:
    found = program if "/" in program else shutil.which(program)
    return None if found is None else os.path.realpath(found)


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")


def _show(argv: Command) -> str:
    return repr(" ".join(argv))


def _origin(source: Path | None) -> str:
    return f"from {source}" if source is not None else f"built-in; {VARIABLE} is not set"


def _toml(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_policy(path: Path, policy: HostPolicy) -> Path:
    """``policy`` as the TOML file ``load_policy`` reads, at ``path``: the file 0644, its
    directory made 0755 (both owned by whoever runs this), as the checks require."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    path.write_text("\n".join(policy.describe()) + "\n", encoding="utf-8")
    path.chmod(0o644)
    return path


# --------------------------------------------------------------------------- loading


def load_policy(settings: Settings) -> HostPolicy:
    """The effective policy of this agent; ``ConfigError`` naming the variable otherwise."""
    protected = (str(settings.effective_agent_state_dir.absolute()),)
    path = settings.agent_policy_file
    if path is None:
        return HostPolicy(dict(BUILT_IN), None, protected)
    path = path.absolute()
    _check_file(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _refuse(f"{VARIABLE} {path} cannot be read ({exc}); check the path.") from None
    except tomllib.TOMLDecodeError as exc:
        raise _refuse(f"{VARIABLE} {path} is not valid TOML ({exc}); fix it.") from None
    return HostPolicy(_parse(document, path), path, protected)


def _check_file(path: Path) -> None:
    """Root's (or the agent's own), a regular file, and writable by nobody else: a policy
    someone else can edit would be theirs, not the host's."""
    try:
        info = path.lstat()
        folder = path.parent.stat()
    except OSError as exc:
        raise _refuse(
            f"{VARIABLE} {path} cannot be read ({exc.strerror}); point it at the host policy "
            "file or unset it for the built-in policy."
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(f"{VARIABLE} {path} is not a regular file; point it at the policy file.")
    if info.st_uid not in {0, os.geteuid()}:
        raise _refuse(
            f"{VARIABLE} {path} is owned by uid {info.st_uid}, not root; chown root {path}."
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _refuse(
            f"{VARIABLE} {path} is writable by its group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); chmod go-w {path}."
        )
    writable = folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not (folder.st_mode & stat.S_ISVTX and folder.st_uid == 0):
        raise _refuse(
            f"{VARIABLE} {path} is in {path.parent}, which others can write to (and so "
            f"replace the policy); move it to a directory like /etc/certctl."
        )


def _parse(document: Mapping[str, Any], path: Path) -> dict[TargetType, Rules]:
    where = f"{VARIABLE} {path}"
    unknown = set(document) - {"defaults", "connectors"}
    if unknown:
        raise _refuse(
            f"{where}: {sorted(unknown)[0]!r} is not a policy table; use [defaults] and "
            "[connectors.<type>]."
        )
    shared = _table(document, "defaults", where)
    per_type: dict[TargetType, Mapping[str, Any]] = {}
    for name, table in _table(document, "connectors", where).items():
        try:
            kind = target_type(name)
        except TargetConfigInvalid as exc:
            raise _refuse(f"{where}: [connectors.{name}]: {exc}") from None
        per_type[kind] = _table({name: table}, name, where, prefix="connectors.")
    rules: dict[TargetType, Rules] = {}
    for kind, built_in in BUILT_IN.items():
        values = {**_values(shared, "defaults", where)}
        values.update(_values(per_type.get(kind, {}), f"connectors.{kind.value.lower()}", where))
        rules[kind] = replace(built_in, **values)
    return rules


def _table(
    document: Mapping[str, Any], name: str, where: str, *, prefix: str = ""
) -> Mapping[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise _refuse(f"{where}: {prefix}{name} must be a table ([{prefix}{name}]).")
    return value


def _values(table: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _KEYS:
            raise _refuse(
                f"{where}: {name}.{key} is not a policy key; use one of {', '.join(_KEYS)}."
            )
        parsed[key] = _PARSERS[key](value, f"{where}: {name}.{key}")
    return parsed


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _refuse(f"{where} must be a list of non-empty strings.")
    return tuple(value)


def _roots(value: Any, where: str) -> tuple[str, ...]:
    roots = _strings(value, where)
    for root in roots:
        if not os.path.isabs(root) or os.path.normpath(root) != root or root == "/":
            raise _refuse(
                f"{where}: {root!r} is not an absolute, normalized directory below /; give "
                "one like '/etc/nginx'."
            )
    return roots


def _commands(value: Any, where: str) -> tuple[Command, ...]:
    if not isinstance(value, list):
        raise _refuse(f"{where} must be a list of commands (strings or lists of strings).")
    commands: list[Command] = []
    for item in value:
        if isinstance(item, str):
            try:
                commands.append(parse_command(item, where))
            except CommandInvalid as exc:
                raise _refuse(str(exc)) from None
        elif isinstance(item, list) and item and all(isinstance(a, str) and a for a in item):
            commands.append(tuple(item))
        else:
            raise _refuse(f"{where}: {item!r} is not a command; write 'nginx -t' or [...].")
    return tuple(commands)


def _mode(value: Any, where: str) -> int:
    try:
        return parse_mode(value)
    except ValueError as exc:
        raise _refuse(f"{where}: {exc}.") from None


_PARSERS: Final[Mapping[str, Callable[[Any, str], Any]]] = {
    "write_roots": _roots,
    "commands": _commands,
    "command_prefixes": _commands,
    "owners": _strings,
    "groups": _strings,
    "max_mode": _mode,
    "max_key_mode": _mode,
}


def _refuse(message: str) -> ConfigError:
    return ConfigError(VARIABLE, message)
