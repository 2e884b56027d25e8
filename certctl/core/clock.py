"""Where "now" comes from.

Decisions take ``now`` as an argument; the shells obtain it from a ``Clock``. The system
clock serves production, and ``VirtualClock`` lets the fleet simulator run months of
renewals in seconds by reading a monotonic source such as ``trio.current_time`` (driven
by ``trio.testing.MockClock``) and mapping it onto a fixed calendar epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


def require_aware(value: datetime, name: str) -> datetime:
    """Reject naive datetimes at the core's entry points.

    Naive values compare happily with each other, so a shell that forgot ``tzinfo`` would
    get plausible but shifted decisions instead of an error; refusing them here keeps every
    timestamp in the core unambiguous.
    """
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware; pass a datetime with tzinfo=UTC.")
    return value


class Clock(Protocol):
    """A source of timezone-aware UTC datetimes."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock, always in UTC so stored timestamps never carry local offsets."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class VirtualClock:
    """Maps a monotonic seconds source onto a calendar epoch.

    The source is read once at construction, so ``now()`` equals ``epoch`` until the
    source advances. Core imports no trio; the shell passes ``trio.current_time``
    so a ``MockClock`` drives calendar time.
    """

    def __init__(self, epoch: datetime, source: Callable[[], float]) -> None:
        self._epoch = require_aware(epoch, "VirtualClock epoch").astimezone(UTC)
        self._source = source
        self._origin = source()

    def now(self) -> datetime:
        return self._epoch + timedelta(seconds=self._source() - self._origin)
