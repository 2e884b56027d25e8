"""Entities to JSON: one converter for every response, so enums, times and mappings are
spelled the same way on every route (PascalCase enum values, RFC 3339 UTC times)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel


def plain(value: Any) -> Any:
    """Dataclasses, pydantic models (the protocol's messages), enums, datetimes, tuples and
    mappings as JSON-ready values."""
    if isinstance(value, BaseModel):
        return {name: plain(item) for name, item in value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        value = {str(plain(k)): plain(v) for k, v in value.items()}
    elif isinstance(value, list | tuple | set | frozenset):
        value = [plain(v) for v in value]
    return value
