"""Field types shared by every target config: durations, file modes, commands, paths.

Each type accepts exactly one unambiguous spelling and refuses the rest with a sentence
naming the fix. The earlier implementation took modes as JSON numbers in decimal (0640
had to be written 416) and durations as integer nanoseconds; a bare number is therefore
refused here rather than guessed at, so a config carried over cannot be misread silently.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

from certctl.core.durations import parse_duration as core_parse_duration
from certctl.deploy import Command, CommandInvalid, parse_command

_MODE = re.compile(r"(?:0o|0)?([0-7]{3,4})")
SPECIAL_BITS = 0o7000
"""setuid, setgid and sticky: never set on a deployed file."""
_ACCOUNT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}\$?")

INTERPRETERS = re.compile(
    r"(?:a|ba|da|k|mk|z|c|tc|fi|yash|posh)?sh|busybox|toybox|env|sudo|doas|su|pkexec|"
    r"nohup|nice|ionice|timeout|setsid|stdbuf|chroot|xargs|find|watch|script|expect|"
    r"python[0-9.]*|pypy[0-9.]*|perl[0-9.]*|ruby[0-9.]*|node(?:js)?|deno|bun|php[0-9.]*|"
    r"lua[0-9.]*|luajit|tclsh[0-9.]*|wish[0-9.]*|awk|gawk|mawk|nawk|sed|osascript|pwsh|"
    r"powershell|java|jshell|R|Rscript|julia|guile|racket|sbcl|ocaml|gdb|make|ssh|"
    r"socat|nc|ncat|netcat|curl|wget|systemd-run|run-parts|crontab|at|batch"
)
"""Programs whose behaviour is whatever their arguments say (shells and interpreters) or
which run another command (wrappers), refused as the program of a command: a target
config must name the program that reloads a server, not code for one to run. The agent's
host policy is the real boundary; this refusal on both ends is defence in depth."""


def parse_duration(value: object) -> float:
    """A target config's duration in seconds: a string in the one grammar
    (``certctl.core.durations``), never a bare number, and positive."""
    if not isinstance(value, str):
        raise ValueError(  # noqa: TRY004 - pydantic reports ValueError as a field error
            f"{value!r} is not a duration; write a number with a unit, like '10s' or '500ms'"
        )
    seconds = core_parse_duration(value).total_seconds()
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration; give at least '1ms'")
    return seconds


def show_seconds(seconds: float) -> str:
    """How a target config shows a duration: in seconds, or milliseconds below one."""
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def parse_mode(value: object) -> int:
    """``"0640"``, ``"640"`` or ``"0o640"`` to permission bits; never setuid, setgid or
    sticky, which have no place on a certificate or key."""
    if isinstance(value, str) and (match := _MODE.fullmatch(value.strip())):
        mode = int(match.group(1), 8)
        if mode & SPECIAL_BITS:
            raise ValueError(
                f"{value!r} sets the setuid, setgid or sticky bit; give plain permission "
                'bits, like "0640"'
            )
        return mode
    raise ValueError(f'{value!r} is not a file mode; write it as an octal string, like "0640"')


def parse_program(value: object) -> str:
    """The program of a command (a name on PATH or an absolute path): not a shell, an
    interpreter or a wrapper, and not a relative path."""
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(f"{value!r} is not a program name; give one like 'nginx'")
    if "/" in value and not (os.path.isabs(value) and os.path.normpath(value) == value):
        raise ValueError(
            f"{value!r} is a relative or non-normalized path; give the program's absolute "
            "path, like '/usr/sbin/nginx', or its name on PATH"
        )
    name = os.path.basename(value)
    if INTERPRETERS.fullmatch(name):
        raise ValueError(
            f"the program {value!r} is a shell, interpreter or command wrapper, which would "
            "run whatever its arguments say; put the steps in a script on the host and give "
            "the script's path"
        )
    return value


def parse_account(value: object) -> str:
    """A user or group: a name as ``useradd`` accepts it, or a numeric id."""
    if isinstance(value, str) and _ACCOUNT.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is not a user or group name; give one like 'www-data' or '33'")


def parse_command_field(value: object) -> Command:
    """A string is split like a shell would but refused if it needs one; a list is argv.
    Either way its program must pass ``parse_program``."""
    if isinstance(value, str):
        try:
            argv = parse_command(value, "the command")
        except CommandInvalid as exc:
            raise ValueError(str(exc).rstrip(".")) from None
        parse_program(argv[0])
        return argv
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(arg, str) for arg in value)
        and value[0]
    ):
        parse_program(value[0])
        return tuple(value)
    raise ValueError(
        f"{value!r} is not a command; give a string like 'nginx -s reload' or an argv list "
        'like ["nginx", "-s", "reload"]'
    )


def parse_absolute_path(value: object) -> str:
    if isinstance(value, str) and os.path.isabs(value) and os.path.normpath(value) == value:
        return value
    raise ValueError(
        f"{value!r} is not an absolute, normalized path; give the full path, like "
        "'/etc/nginx/certs/site.pem'"
    )


def parse_file_name(value: object) -> str:
    """A bare file name: it is joined to a directory the config names separately."""
    if (
        isinstance(value, str)
        and value not in {"", ".", ".."}
        and "/" not in value
        and "\\" not in value
    ):
        return value
    raise ValueError(f"{value!r} is not a plain file name; remove any '/' or '\\'")


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(value: object) -> HostPort:
    """``"127.0.0.1:443"``, ``"mail.example.com:465"`` or ``"[::1]:8443"``."""
    problem = f"{value!r} is not an endpoint; write it as host:port, like '127.0.0.1:443'"
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or (":" in host) != bracketed:
        raise ValueError(problem)
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(problem) from None
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} has port {port}; use a port from 1 to 65535")
    return HostPort(host, int(port))


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(show_seconds, return_type=str)
]
FileMode = Annotated[
    int, BeforeValidator(parse_mode), PlainSerializer(lambda m: f"{m:04o}", return_type=str)
]
CommandLine = Annotated[
    Command, BeforeValidator(parse_command_field), PlainSerializer(list, return_type=list[str])
]
AbsolutePath = Annotated[str, BeforeValidator(parse_absolute_path)]
Program = Annotated[str, BeforeValidator(parse_program)]
Account = Annotated[str, BeforeValidator(parse_account)]
FileName = Annotated[str, BeforeValidator(parse_file_name)]
Address = Annotated[
    HostPort, BeforeValidator(parse_host_port), PlainSerializer(str, return_type=str)
]
