"""``create_app``: the quart-trio application of the control plane.

Cross-cutting behaviour lives in two hooks instead of in every view: ``before_request``
assigns the request id, authenticates by the access the route declares (see
``certctl.server.access``) and applies the per-caller rate limit; ``after_request`` adds
the request id and security headers, records the latency histogram and queues the audit
event. Errors from anywhere become the JSON error body in ``certctl.server.errors``.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from quart import Response, current_app, g, request
from quart.json.provider import DefaultJSONProvider, JSONProvider
from quart_schema import QuartSchema
from quart_trio import QuartTrio

from certctl.config import AuthType, Settings
from certctl.core.clock import Clock
from certctl.core.model import ActorType, Agent, AuditEvent
from certctl.server import access
from certctl.server.access import Access
from certctl.server.audit_log import AuditBuffer
from certctl.server.auth import OperatorKeys, Unauthenticated, bearer
from certctl.server.errors import error_response, to_response
from certctl.server.metrics import REQUEST_SECONDS
from certctl.server.ratelimit import RateLimiter, retry_after
from certctl.server.routes import agents, certificates, inventory, jobs, system
from certctl.server.state import EXTENSION, ServerState, state
from certctl.services import agents as agent_service
from certctl.services import inventory as inventory_service
from certctl.services.context import Actor, Services, Timeouts
from certctl.services.errors import Forbidden, ServiceError
from certctl.services.issuers import IssuerDefaults, IssuerPool
from certctl.store.base import Store
from certctl.store.errors import NotFound

UNAUDITED = frozenset({"/health", "/ready", "/metrics"})
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
Background = Callable[[Services], Awaitable[None]]
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a request body may have."""


class _DepthLimitedJSON(DefaultJSONProvider):
    """The app's JSON provider (quart-schema's), with a nesting limit on parsing.

    Python's parser recurses once per level, so a few hundred kilobytes of ``[[[[...``
    (well under the body limit) raise ``RecursionError``, which would surface as a 500;
    and a body that just parses would still be recursed through by the schemas and
    the response encoder. Both become ``ValueError``, which quart answers with 400.
    """

    def __init__(self, app: QuartTrio, inner: JSONProvider) -> None:
        super().__init__(app)
        self._inner = inner

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return self._inner.dumps(obj, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.response(*args, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = self._inner.loads(s, **kwargs)
        except RecursionError:
            value = None
            too_deep = True
        else:
            too_deep = _depth_exceeds(value, MAX_JSON_DEPTH)
        if too_deep:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return value


def _depth_exceeds(value: object, limit: int) -> bool:
    """Whether ``value`` nests arrays/objects deeper than ``limit`` (without recursing)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children: Iterable[object]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def build_services(settings: Settings, store: Store, clock: Clock) -> Services:
    defaults = IssuerDefaults(
        data_dir=settings.effective_data_dir,
        passphrase=settings.config_encryption_key or None,
        ca_cert_path=settings.ca_cert_path,
        ca_key_path=settings.ca_key_path,
    )
    timeouts = Timeouts(
        awaiting_csr=settings.job_awaiting_csr_timeout,
        awaiting_approval=settings.job_awaiting_approval_timeout,
        agent_offline_after=settings.agent_offline_after,
    )
    return Services(store=store, clock=clock, issuers=IssuerPool(defaults), timeouts=timeouts)


def create_app(
    settings: Settings,
    store: Store,
    *,
    clock: Clock,
    services: Services | None = None,
    background: Sequence[Background] = (),
) -> QuartTrio:
    """The app; ``background`` tasks (the scheduler) run in the app's nursery while serving."""
    app = QuartTrio("certctl", root_path=str(Path(__file__).parent))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_size
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = None
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    QuartSchema(
        app,
        openapi_path="/api/v1/openapi.json",
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
        info={"title": "certctl control plane", "version": "1"},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
    )
    app.json = _DepthLimitedJSON(app, app.json)
    services = services or build_services(settings, store, clock)
    buffer = AuditBuffer(store)
    limiter = (
        RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        if settings.rate_limit_enabled
        else None
    )
    app.extensions[EXTENSION] = ServerState(
        settings, services, OperatorKeys(settings.api_keys), buffer, limiter
    )
    for module in (system, certificates, inventory, agents, jobs):
        app.register_blueprint(module.blueprint)
    app.register_error_handler(Exception, to_response)
    app.before_request(_before)
    app.after_request(_after)

    @app.before_serving
    async def start() -> None:
        await inventory_service.ensure_defaults(services, issuer_config={})
        app.nursery.start_soon(buffer.run)
        for task in background:
            app.nursery.start_soon(task, services)

    @app.after_serving
    async def stop() -> None:
        await buffer.close(settings.audit_flush_timeout.total_seconds())

    return app


async def _before() -> Response | None:
    g.request_id = uuid.uuid4().hex
    g.started = time.perf_counter()
    g.actor = None
    if request.method == "OPTIONS" and _allowed_origin() is not None:
        return Response(b"", status=204)  # a CORS preflight; _after adds its headers
    kind = access.access_of(_view(request.endpoint))
    try:
        g.actor = await _authenticate(kind)
    except Unauthenticated as exc:
        return error_response(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="certctl"'})
    except ServiceError as exc:
        return error_response(exc.status, exc.message, code=exc.code)
    server = state()
    if g.actor is not None and server.limiter is not None:
        wait = server.limiter.acquire(g.actor.agent_id or f"user:{g.actor.name}")
        if wait:
            return error_response(
                429,
                "rate limit exceeded for this key; slow down and retry after the "
                "Retry-After seconds.",
                headers={"Retry-After": retry_after(wait)},
            )
    return None


def _view(endpoint: str | None) -> object | None:
    return None if endpoint is None else current_app.view_functions.get(endpoint)


async def _authenticate(kind: Access) -> Actor | None:
    server = state()
    settings = server.settings
    if kind is Access.PUBLIC:
        return None
    token = bearer(request.headers.get("Authorization"))
    if kind is Access.BOOTSTRAP:
        if not agent_service.bootstrap_token_matches(token, settings.agent_bootstrap_token):
            raise Unauthenticated(
                "the bootstrap token is wrong; send CERTCTL_AGENT_BOOTSTRAP_TOKEN as the "
                "Bearer token to register."
            )
        return Actor("agent-bootstrap", ActorType.AGENT)
    if kind is Access.AGENT:
        agent = await _agent(token)
        return agent_service.actor_of(agent)
    if settings.auth_type == AuthType.NONE.value:
        return Actor("anonymous", ActorType.USER, admin=True)
    actor = server.operator_keys.actor(token)
    if actor is None:
        raise Unauthenticated("the API key is not valid; send a key from CERTCTL_API_KEYS.")
    if kind is Access.ADMIN and not actor.admin:
        raise Forbidden(f"key {actor.name!r} is not an admin key; this route needs one.")
    return actor


async def _agent(token: str) -> Agent:
    server = state()
    digest = agent_service.key_hash(token)
    agent_id = (request.view_args or {}).get("agent_id", "")
    agent = server.agent_keys.get(digest)
    if agent is None:
        try:
            agent = await agent_service.authenticate(server.services, token, agent_id)
        except NotFound:
            raise Unauthenticated(
                "the agent key is not valid; use the key from registration."
            ) from None
        server.agent_keys.put(digest, agent)
    elif agent.id != agent_id:
        agent = await agent_service.authenticate(server.services, token, agent_id)
    g.agent = agent
    return agent


def _allowed_origin() -> str | None:
    """The request's Origin if ``CERTCTL_CORS_ORIGINS`` lists it exactly; CORS is off
    otherwise, so browsers keep other sites' scripts away from the API."""
    origin = request.headers.get("Origin")
    return origin if origin and origin in state().settings.cors_origins else None


def _cors(response: Response) -> None:
    origin = _allowed_origin()
    if origin is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Vary"] = "Origin"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"


async def _after(response: Response) -> Response:
    request_id = g.get("request_id", "")
    response.headers["X-Request-ID"] = request_id
    _cors(response)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    started = g.get("started", time.perf_counter())
    latency = time.perf_counter() - started
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    REQUEST_SECONDS.labels(request.method, route, str(response.status_code)).observe(latency)
    if request.path not in UNAUDITED and not request.path.startswith("/.well-known/"):
        state().audit.add(await _call_event(response.status_code, latency, request_id))
    return response


async def _call_event(status: int, latency: float, request_id: str) -> AuditEvent:
    actor: Actor | None = g.get("actor")
    body = b""
    # A chunked body has no Content-Length; it is still bounded by MAX_CONTENT_LENGTH.
    length = request.content_length
    if length is None or 0 < length <= state().settings.max_body_size:
        try:
            body = await request.get_data(cache=True)  # type: ignore[assignment]
        except Exception:
            body = b""
    services = state().services
    return AuditEvent(
        id=services.new_id("audit"),
        actor=actor.name if actor else "anonymous",
        actor_type=actor.type if actor else ActorType.USER,
        action=f"api_{request.method.lower()}",
        resource_type="api",
        resource_id=request.path[:512],
        timestamp=services.now(),
        details={
            "method": request.method,
            "status": status,
            "latency_ms": round(latency * 1000, 3),
            "body_sha256": hashlib.sha256(body).hexdigest()[:16] if body else "",
            "request_id": request_id,
        },
    )
