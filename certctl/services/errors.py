"""Errors a use case raises for its caller to show; each carries the HTTP status it means.

Store errors (``NotFound``, ``Conflict``, ``StoreUnavailable``, ``InvalidCursor``) pass
through unchanged: the server maps both families, so a service never re-wraps a store
error only to change its name.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """A request that cannot be carried out as asked; ``message`` is one sentence."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ServiceError):
    """A value that is well-formed JSON but not acceptable (unknown reference, bad combo)."""


class Unprocessable(ServiceError):
    """Material the issuer refused (CSR, profile); the job records the same reason."""

    status = 422
    code = "unprocessable"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class Gone(ServiceError):
    """The agent was retired: it must stop calling."""

    status = 410
    code = "gone"


class StateConflict(ServiceError):
    """The resource is in a state that does not allow the request (job not Running, ...)."""

    status = 409
    code = "conflict"
