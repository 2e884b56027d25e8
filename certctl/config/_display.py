"""What ``certctl config check`` prints: one role's variables, every secret hidden."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from certctl.config._parse import APIKey
from certctl.config._settings import SPECS, Role, Settings, Var
from certctl.core.durations import format_duration


def redacted(settings: Settings, role: Role) -> list[tuple[str, str, bool]]:
    """``(variable, shown value, is_default)`` for each variable ``role`` reads.

    Only that role's variables: an agent's check listing the server's API keys would be
    noise at best and, in an agent's env file, a hint that they belong there.
    """
    rows = []
    for name, spec in SPECS.items():
        if role in spec.roles:
            value = getattr(settings, name)
            rows.append((spec.env, _show(value, spec), value == spec.default))
    return rows


def shown_value(value: Any) -> str:
    """A non-secret value as an operator would write it in an env file."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _show(value: Any, spec: Var) -> str:
    if value is None:
        return "<unset>"
    if not spec.secret:
        return shown_value(value)
    if isinstance(value, tuple):
        keys: tuple[APIKey, ...] = value
        return ",".join(f"{k.name}:<redacted>:{k.role}" for k in keys)
    if spec.env == "CERTCTL_DATABASE_URL":
        return _redact_url(str(value))
    return "<redacted>" if value else "<unset>"


def _redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``<redacted>``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":<redacted>@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<redacted: unparseable URL>"
