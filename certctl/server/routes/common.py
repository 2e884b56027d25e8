"""Helpers every route module shares: the caller, and ``answers``, which encodes a view's
value as JSON after checking it against the response model the OpenAPI document shows.

A view returns ``(value, status)`` (or an error ``Response``), the value as the service
gave it (entities, protocol messages, pages); ``answers`` encodes it with ``plain`` (one
spelling of enums and times on every route), validates the encoded body against the
documented model, and documents the error body for each 4xx the route can answer. A
body that does not match its own schema is a server bug: it fails as a 500 (logged with
the request id), never as a silently different answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import wraps
from typing import Any, Protocol, TypeVar

from pydantic import TypeAdapter
from quart import g, jsonify
from quart.wrappers import Response
from quart_schema.validation import QUART_SCHEMA_RESPONSE_ATTRIBUTE

from certctl.core.model import Agent
from certctl.server.encode import plain
from certctl.server.schemas import ErrorBody
from certctl.services.context import Actor

Reply = tuple[Response, int]
Answer = tuple[object, int]
_F = TypeVar("_F", bound=Callable[..., Any])
View = Callable[..., Awaitable[Answer | Response]]

AUTHENTICATED = (400, 401, 403, 429)
"""What any authenticated route can answer: a hostile request (400), no or a wrong key
(401), a key without the role (403), the rate limit (429)."""


class PageOfItems(Protocol):
    """One page of a list, as the services return it."""

    @property
    def items(self) -> tuple[Any, ...]: ...
    @property
    def next_cursor(self) -> str | None: ...


def actor() -> Actor:
    found: Actor = g.actor
    return found


def calling_agent() -> Agent:
    found: Agent = g.agent
    return found


def liveness_only() -> None:
    """This call only showed the agent is alive (a heartbeat, a poll without work): it is
    counted in metrics, not written to the audit trail, which would otherwise grow by a
    row per agent per minute and say nothing (docs/server.md, "Audit")."""
    g.liveness = True


def page(found: PageOfItems) -> dict[str, object]:
    return {"items": found.items, "next_cursor": found.next_cursor}


def answers(
    model: Any, status: int = 200, *, errors: Iterable[int] = (), public: bool = False
) -> Callable[[View], Callable[..., Awaitable[Reply]]]:
    """Document ``model`` as the ``status`` answer and ``ErrorBody`` for ``errors`` (plus
    ``AUTHENTICATED`` unless ``public``), and check every ``status`` answer against it."""
    adapter: TypeAdapter[Any] = TypeAdapter(model)
    codes = sorted({*errors, *(() if public else AUTHENTICATED)})

    def decorate(view: View) -> Callable[..., Awaitable[Reply]]:
        @wraps(view)
        async def encoded(*args: Any, **kwargs: Any) -> Reply:
            result = await view(*args, **kwargs)
            if isinstance(result, Response):  # an error body, already encoded
                return result, result.status_code
            value, code = result
            body = plain(value)
            if code == status:
                adapter.validate_python(body)
            return jsonify(body), code

        return document(model, status, errors=codes)(encoded)

    return decorate


def document(model: Any, status: int = 200, *, errors: Iterable[int] = ()) -> Callable[[_F], _F]:
    """Only document ``model`` as the ``status`` answer and ``ErrorBody`` for ``errors``:
    for views that answer other media (a CRL, Prometheus text) and encode it themselves."""

    def decorate(view: _F) -> _F:
        schemas: dict[int, tuple[Any, None]] = dict(
            getattr(view, QUART_SCHEMA_RESPONSE_ATTRIBUTE, {})
        )
        schemas[status] = (model, None)
        for code in errors:
            schemas.setdefault(code, (ErrorBody, None))
        setattr(view, QUART_SCHEMA_RESPONSE_ATTRIBUTE, schemas)
        return view

    return decorate
