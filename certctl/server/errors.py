"""Every error leaves the server as ``{error, message, request_id}`` with the right status.

One table (``STATUSES``) maps error types of the services, the store and the job state
machine onto statuses, so no route formats an error itself and no service knows HTTP.
Anything unmapped, a ``ValueError`` included, is a 500 whose message hides the exception
(it is logged with the request id instead): a 5xx caused by bad input is a bug to fix by
raising a mapped error where the input is checked, not a message to show.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from quart import g, jsonify
from quart.wrappers import Response
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import BadRequest, HTTPException, MethodNotAllowed

from certctl.core.jobs import IllegalTransition
from certctl.logging import get_logger
from certctl.services.errors import (
    Forbidden,
    Gone,
    InvalidInput,
    StateConflict,
    Unprocessable,
)
from certctl.store.errors import Conflict, InvalidCursor, NotFound, StoreUnavailable

log = get_logger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    431: "request_header_fields_too_large",
    503: "unavailable",
}


STATUSES: Mapping[type[Exception], int] = {
    InvalidInput: 400,
    InvalidCursor: 400,
    Forbidden: 403,
    NotFound: 404,
    Gone: 410,
    StateConflict: 409,
    Conflict: 409,
    IllegalTransition: 409,
    Unprocessable: 422,
    StoreUnavailable: 503,
}
"""Each expected error type and its status; a subclass takes its nearest mapped base's."""


class BodyRefused(BadRequest):
    """400: the body is not JSON, or JSON certctl refuses; ``description`` says why."""


def error_response(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    body = {
        "error": code or _HTTP_CODES.get(status, "error"),
        "message": message,
        "request_id": g.get("request_id", ""),
    }
    response: Response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def describe_validation(error: Exception) -> str:
    """The first pydantic complaint as one sentence: field path, problem, fix."""
    cause = getattr(error, "validation_error", error)
    if isinstance(cause, ValidationError) and cause.errors():
        first: dict[str, Any] = dict(cause.errors()[0])
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        count = cause.error_count()
        more = f" (and {count - 1} more problems)" if count > 1 else ""
        return f"{where}: {first.get('msg', 'invalid')}{more}; fix the request and retry."
    if isinstance(cause, TypeError | ValueError) and str(cause):
        return f"request body: {cause}; send a JSON object matching the schema."
    return "the request body is not a JSON object matching the schema; fix it and retry."


def to_response(error: Exception) -> Response:
    known = _classify(error)
    if known is not None:
        status, message, code = known
        headers = {}
        if status == 503:
            headers["Retry-After"] = "5"
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers["Allow"] = ", ".join(sorted(set(error.valid_methods) - {"HEAD"}))
        return error_response(status, message, code=code, headers=headers)
    log.error(
        "request_failed",
        request_id=g.get("request_id", ""),
        error=repr(error),
        exc_info=error,
    )
    return error_response(500, "internal error; the server log has details under this request_id.")


def _classify(error: Exception) -> tuple[int, str, str | None] | None:
    """Status, message and code of an error we expect, or ``None`` for a bug."""
    match error:
        case BodyRefused():
            return (400, f"request body: {error.description}; fix it and retry.", None)
        case RequestSchemaValidationError():
            return (400, describe_validation(error), None)
        case UnicodeDecodeError():  # the body is read as text before it is parsed
            return (400, "request body is not UTF-8; send a UTF-8 JSON object.", None)
        case HTTPException(code=int(code)):
            return (code, _http_message(error, code), None)
    status = _status_of(type(error))
    if status is None:
        return None
    message = str(error) or "not found."
    if isinstance(error, InvalidCursor):
        message = f"cursor: {error}"
    return (status, message, None)


def _status_of(kind: type[Exception]) -> int | None:
    for base in kind.__mro__:
        status = STATUSES.get(base)
        if status is not None:
            return status
    return None


def _http_message(error: HTTPException, code: int) -> str:
    if code == 413:
        return "request body is larger than CERTCTL_MAX_BODY_SIZE; send a smaller body."
    if code == 404:
        return "no such route; see /api/v1/openapi.json for the API."
    if code == 405:
        return "method not allowed on this route; use one in the Allow header."
    if code == 400:
        return "the request is malformed (JSON that does not parse?); send a JSON object."
    return (error.description or error.name or "request refused").rstrip(".") + "."
