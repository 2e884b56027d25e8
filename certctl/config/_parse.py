"""Parsers of ``CERTCTL_*`` values, and the value types they produce.

A parser raises ``ValueError`` with the expected form and never quotes a secret; the
caller (``load``) turns it into an error naming the variable, so a typo is never a silent
fallback to the default (the earlier implementation turned ``CERTCTL_SERVER_PORT=abc``
into port 8080).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from certctl.core.model import KeyRole

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_KEY_NAME = re.compile(r"[A-Za-z0-9_-]+")

_E = TypeVar("_E", bound=StrEnum)


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected true/false (or 1/0, yes/no, on/off), got {raw!r}")


def parse_int(raw: str) -> int:
    try:
        return int(raw.strip(), 10)
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None


def parse_port(raw: str) -> int:
    port = parse_int(raw)
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a TCP port between 1 and 65535, got {port}")
    return port


def parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def parse_path(raw: str) -> Path:
    return Path(raw.strip()).expanduser()


def parse_str(raw: str) -> str:
    return raw


class AuthType(StrEnum):
    API_KEY = "api-key"
    NONE = "none"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


def enum_parser(kind: type[_E]) -> Callable[[str], _E]:
    """A case-insensitive parser for ``kind`` whose error lists the accepted values."""

    def parse(raw: str) -> _E:
        try:
            return kind(raw.strip().lower())
        except ValueError:
            choices = ", ".join(member.value for member in kind)
            raise ValueError(f"expected one of {choices}, got {raw!r}") from None

    return parse


def parse_auth_type(raw: str) -> str:
    """Kept as text so that ``validate()`` can explain ``jwt`` instead of a bare parse error."""
    return raw.strip().lower()


@dataclass(frozen=True, slots=True)
class APIKey:
    """An operator key; the same name may hold two keys while a rotation is in progress."""

    name: str
    key: str
    role: KeyRole = KeyRole.OPERATOR


def parse_api_keys(raw: str) -> tuple[APIKey, ...]:
    """``name:key[:role]`` entries; the role is viewer, operator (the default) or admin."""
    roles = ", ".join(role.value for role in KeyRole)
    keys: list[APIKey] = []
    for entry in parse_list(raw):
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not parts[1]:
            raise ValueError("each entry must be name:key or name:key:role")
        name, key = parts[0], parts[1]
        if not _KEY_NAME.fullmatch(name):
            raise ValueError(f"key name {name!r} may contain only letters, digits, - and _")
        try:
            role = KeyRole(parts[2]) if len(parts) == 3 else KeyRole.OPERATOR
        except ValueError:
            raise ValueError(
                f"the role of {name!r} must be one of {roles}, got {parts[2]!r}"
            ) from None
        for other in keys:
            if other.name == name and other.key == key:
                raise ValueError(f"key for {name!r} is listed twice")
            if other.name == name and other.role is not role:
                raise ValueError(
                    f"name {name!r} appears with roles {other.role} and {role}; rotate like "
                    "for like"
                )
        keys.append(APIKey(name=name, key=key, role=role))
    return tuple(keys)
