"""Typed storage errors: callers catch these and never a driver exception.

The services map them onto HTTP statuses (404, 409, 503) and the scheduler onto "skip this
unit and retry later", so the split follows what a caller can do about the failure rather
than which database error caused it.
"""

from __future__ import annotations

from certctl.core.errors import CertctlError


class StoreError(CertctlError):
    """Base class; raised as itself only for a database failure no subclass describes."""


class NotFound(StoreError):
    """The entity, or an entity it references, does not exist."""


class Conflict(StoreError):
    """The write collides with the current state: a taken name or id, a row still
    referenced, or a compare-and-set whose expected value changed under it. Reloading and
    retrying (or choosing another name) is the fix."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now; the same call may succeed later."""


class InvalidCursor(StoreError, ValueError):
    """A pagination cursor that this store did not issue (or that was altered)."""


class DataDirUnusable(StoreError):
    """The embedded PostgreSQL cannot live in the configured data directory."""


class SchemaMismatch(StoreError):
    """The database schema and this build's migrations disagree (pending, edited, or
    newer than the build)."""
