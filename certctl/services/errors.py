"""Errors a use case raises for its caller to show, named for what went wrong.

They carry no HTTP status: the server maps each type onto one in its one table
(``certctl.server.errors``), and a non-HTTP caller (the CLI, the simulator) shows the
message as it is. Store errors (``NotFound``, ``Conflict``, ``StoreUnavailable``,
``InvalidCursor``) pass through unchanged: the server maps both families, so a service
never re-wraps a store error only to change its name.
"""

from __future__ import annotations

from certctl.core.errors import CertctlError


class ServiceError(CertctlError):
    """A request that cannot be carried out as asked; ``message`` is one sentence."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ServiceError):
    """A value that is well-formed JSON but not acceptable (unknown reference, bad combo)."""


class Unprocessable(ServiceError):
    """Material the issuer refused (CSR, profile); the job records the same reason."""


class Forbidden(ServiceError):
    """The caller may not do this (another agent's job, the approver of their own job)."""


class Gone(ServiceError):
    """The agent was retired: it must stop calling."""


class StateConflict(ServiceError):
    """The resource is in a state that does not allow the request (job not Running, ...)."""
