"""``create_app``: the quart-trio application of the control plane.

Cross-cutting behaviour lives in two hooks instead of in every view: ``before_request``
assigns the request id, refuses new audited work while the audit buffer is full,
authenticates by the access the route declares (``certctl.server.access``; failed
credentials are throttled per address, ``certctl.server.auth_throttle``), refuses hostile
characters (``certctl.server.hygiene``) and applies the per-caller rate limit;
``after_request`` adds
the request id and security headers, records the latency histogram and queues the audit
event. Errors from anywhere become the JSON error body in ``certctl.server.errors``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import trio
from quart import Response, g, request
from quart.json.provider import DefaultJSONProvider, JSONProvider
from quart_schema import QuartSchema
from quart_trio import QuartTrio
from quart_trio.wrappers import TrioRequest

from certctl.config import AuthType, Settings
from certctl.core.clock import Clock
from certctl.core.model import ActorType, Agent, AuditEvent, KeyRole
from certctl.server import access, hygiene
from certctl.server.access import Access
from certctl.server.audit_log import LOOP as AUDIT_LOOP
from certctl.server.audit_log import AuditBuffer
from certctl.server.auth import OperatorKeys, Throttled, Unauthenticated, bearer
from certctl.server.auth_throttle import AuthThrottle, Window
from certctl.server.errors import BodyRefused, error_response, to_response
from certctl.server.metrics import AUTH_FAILURES, REQUEST_SECONDS
from certctl.server.openapi import CertctlOpenAPI
from certctl.server.ratelimit import RateLimiter, retry_after
from certctl.server.routes import agents, certificates, inventory, jobs, system
from certctl.server.state import EXTENSION, ServerState, state
from certctl.server.supervisor import Supervisor
from certctl.services import agents as agent_service
from certctl.services import inventory as inventory_service
from certctl.services.context import Actor, Services, Timeouts
from certctl.services.errors import Forbidden, ServiceError
from certctl.services.issuers import IssuerDefaults, IssuerPool
from certctl.services.wakeups import Wakeups
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
Background = Callable[[Services, Supervisor], Awaitable[None]]
"""A long-lived task of the server (the scheduler), run under the supervisor."""
SIGHTINGS_LOOP = "agent_sightings"
PUBLISH_LOOP = "work_publish"
RELAY_LOOP = "work_relay"
SIGHTINGS_FLUSH_TIMEOUT = 5.0
"""Seconds the last liveness write may hold up shutdown."""
AUTH_AUDIT_EVERY = 10.0
"""Seconds between writes of closed failed-authentication windows to the audit."""


class _CheckedJSON(DefaultJSONProvider):
    """The app's JSON provider (quart-schema's), refusing hostile bodies while parsing.

    Python's parser recurses once per level, so a few hundred kilobytes of ``[[[[...``
    (well under the body limit) raise ``RecursionError``, which would surface as a 500.
    That, a body nested past ``MAX_JSON_DEPTH`` and a string holding a control or bidi
    character (``certctl.server.hygiene``) all become ``ValueError``, which quart
    answers with 400 before any view sees the body.
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
            raise ValueError(f"JSON nested deeper than {hygiene.MAX_JSON_DEPTH} levels") from None
        problem = hygiene.json_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class _Request(TrioRequest):
    """quart-trio's request, telling the client why its JSON body was refused (quart
    says only "bad request", which leaves the client guessing between a typo and a NUL)."""

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise BodyRefused(str(error))


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
    # The replica's cap on waiting polls is shared evenly among its worker processes.
    waiting = math.ceil(settings.max_waiting_agents / max(1, settings.server_workers))
    return Services(
        store=store,
        clock=clock,
        issuers=IssuerPool(defaults),
        timeouts=timeouts,
        wakeups=Wakeups(max_waiting=waiting),
    )


def create_app(
    settings: Settings,
    store: Store,
    *,
    clock: Clock,
    services: Services | None = None,
    background: Mapping[str, Background] | None = None,
    supervisor: Supervisor | None = None,
) -> QuartTrio:
    """The app; ``background`` tasks (the scheduler, by name) run in the app's nursery
    under ``supervisor`` while serving, beside the audit flusher."""
    app = QuartTrio("certctl", root_path=str(Path(__file__).parent), static_folder=None)
    app.request_class = _Request
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
        openapi_provider_class=CertctlOpenAPI,
    )
    app.json = _CheckedJSON(app, app.json)
    services = services or build_services(settings, store, clock)
    supervisor = supervisor or Supervisor()
    buffer = AuditBuffer(store)
    limiter = (
        RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        if settings.rate_limit_enabled
        else None
    )
    throttle = AuthThrottle(settings.auth_failures_per_minute, settings.auth_failure_burst)
    app.extensions[EXTENSION] = ServerState(
        settings, services, OperatorKeys(settings.api_keys), buffer, limiter, supervisor, throttle
    )
    for module in (system, certificates, inventory, agents, jobs):
        app.register_blueprint(module.blueprint)
    missing = access.undeclared(rule.endpoint for rule in app.url_map.iter_rules())
    if missing:
        raise RuntimeError(f"routes without an access entry in certctl.server.access: {missing}")
    app.register_error_handler(Exception, to_response)
    app.before_request(_before)
    app.after_request(_after)
    tasks = dict(background or {})

    async def audit_auth_failures() -> None:
        _audit_windows(services, buffer, throttle.closed_windows())

    @app.before_serving
    async def start() -> None:
        await inventory_service.ensure_defaults(services, issuer_config={})
        app.nursery.start_soon(functools.partial(supervisor.loop, AUDIT_LOOP, buffer.step, every=0))
        _start_agent_loops(app, services, supervisor)
        app.nursery.start_soon(
            functools.partial(
                supervisor.loop, "auth_failure_audit", audit_auth_failures, every=AUTH_AUDIT_EVERY
            )
        )
        for name, task in tasks.items():
            app.nursery.start_soon(
                supervisor.keep_running, name, functools.partial(task, services, supervisor)
            )

    @app.after_serving
    async def stop() -> None:
        _audit_windows(services, buffer, throttle.closed_windows(everything=True))
        await buffer.close(settings.audit_flush_timeout.total_seconds())
        with trio.CancelScope(shield=True), trio.move_on_after(SIGHTINGS_FLUSH_TIMEOUT):
            await services.sightings.flush(services.store)

    return app


def stopping(app: QuartTrio) -> None:
    """The server is shutting down: waiting long polls answer now (their agents poll
    another replica, or this one once it is back) and no new poll waits."""
    app.extensions[EXTENSION].services.wakeups.close()


def _start_agent_loops(app: QuartTrio, services: Services, supervisor: Supervisor) -> None:
    """The long poll's background work, supervised like every other loop: the coalesced
    liveness write, and the relay of work announcements to and from the other replicas."""
    store, wakeups, sightings = services.store, services.wakeups, services.sightings
    origin = services.new_id("replica")

    async def flush() -> None:
        await sightings.flush(store)

    async def publish() -> None:
        await wakeups.publish_step(store, origin)

    async def relay() -> None:
        await wakeups.relay(store, origin)

    every = sightings.interval.total_seconds()
    app.nursery.start_soon(functools.partial(supervisor.loop, SIGHTINGS_LOOP, flush, every=every))
    app.nursery.start_soon(functools.partial(supervisor.loop, PUBLISH_LOOP, publish, every=0))
    app.nursery.start_soon(supervisor.keep_running, RELAY_LOOP, relay)


def _audit_windows(services: Services, buffer: AuditBuffer, windows: Iterable[Window]) -> None:
    for window in windows:
        buffer.add(
            AuditEvent(
                id=services.new_id("audit"),
                actor="anonymous",
                actor_type=ActorType.USER,
                action="auth_failed",
                resource_type="client",
                resource_id=window.address,
                timestamp=window.last_at,
                details={
                    "failures": window.failures,
                    "throttled": window.throttled,
                    "first_at": window.first_at.isoformat(),
                    "last_at": window.last_at.isoformat(),
                    "paths": list(window.paths),
                },
            )
        )


async def _before() -> Response | None:
    g.request_id = uuid.uuid4().hex
    g.started = time.perf_counter()
    g.actor = None
    g.unauthenticated = False
    if request.method == "OPTIONS" and _allowed_origin() is not None:
        return Response(b"", status=204)  # a CORS preflight; _after adds its headers
    kind = access.access_of(request.endpoint)
    for gate in (_audit_room, _credential, _clean, _rate):
        refusal = await gate(kind)
        if refusal is not None:
            return refusal
    return None


async def _audit_room(kind: Access) -> Response | None:
    """No audited work starts while its audit row could not be kept."""
    if kind is Access.PUBLIC or state().audit.accepting:
        return None
    return error_response(
        503,
        "the audit buffer is full (the database is not taking audit rows); retry after the "
        "Retry-After seconds.",
        headers={"Retry-After": "5"},
    )


async def _credential(kind: Access) -> Response | None:
    server = state()
    address = request.remote_addr or "unknown"
    try:
        g.actor = await _authenticate(kind, address)
    except Unauthenticated as exc:
        g.unauthenticated = True
        throttled = isinstance(exc, Throttled)
        server.throttle.failed(address, request.path, server.services.now(), throttled=throttled)
        AUTH_FAILURES.labels("throttled" if throttled else "refused").inc()
        if isinstance(exc, Throttled):
            return error_response(
                429, str(exc), headers={"Retry-After": retry_after(exc.retry_after)}
            )
        return error_response(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="certctl"'})
    except ServiceError as exc:
        return to_response(exc)
    return None


async def _clean(kind: Access) -> Response | None:
    headers = {name: request.headers.get(name) for name in hygiene.CHECKED_HEADERS}
    problem = hygiene.request_problem(request.path, request.args.items(multi=True), headers)
    return None if problem is None else error_response(400, problem)


async def _rate(kind: Access) -> Response | None:
    limiter, actor = state().limiter, g.actor
    if actor is None or limiter is None:
        return None
    wait = limiter.acquire(actor.agent_id or f"user:{actor.name}")
    if not wait:
        return None
    return error_response(
        429,
        "rate limit exceeded for this key; slow down and retry after the Retry-After seconds.",
        headers={"Retry-After": retry_after(wait)},
    )


async def _authenticate(kind: Access, address: str) -> Actor | None:
    """Who is calling, as ``kind`` requires; ``Throttled`` instead of any database work
    while ``address`` is over its failed-authentication budget."""
    server = state()
    settings = server.settings
    if kind is Access.PUBLIC:
        return None
    wait = server.throttle.blocked(address)
    token = bearer(request.headers.get("Authorization"))
    if kind is Access.BOOTSTRAP:
        if agent_service.bootstrap_token_matches(token, settings.agent_bootstrap_token):
            return Actor("agent-bootstrap", ActorType.AGENT)
        raise _refused(
            wait,
            "the bootstrap token is wrong; send CERTCTL_AGENT_BOOTSTRAP_TOKEN as the Bearer "
            "token to register.",
        )
    if kind is Access.AGENT:
        return agent_service.actor_of(await _agent(token, wait))
    if settings.auth_type == AuthType.NONE.value:
        return Actor("anonymous", ActorType.USER, role=KeyRole.ADMIN)
    actor = server.operator_keys.actor(token)
    if actor is None:
        raise _refused(wait, "the API key is not valid; send a key from CERTCTL_API_KEYS.")
    needed = kind.role
    assert needed is not None  # the remaining kinds are the operator roles
    assert actor.role is not None
    if not actor.role.allows(needed):
        g.actor = actor  # the refusal is audited under the key's name
        raise Forbidden(
            f"key {actor.name!r} has the {actor.role} role and this route needs {needed}; "
            f"use a key with the {needed} role (CERTCTL_API_KEYS name:key:{needed})."
        )
    return actor


def _refused(wait: float, message: str) -> Unauthenticated:
    if wait:
        return Throttled(
            "too many failed authentications from this address; retry after the "
            "Retry-After seconds with a valid credential.",
            retry_after=wait,
        )
    return Unauthenticated(message)


async def _agent(token: str, wait: float) -> Agent:
    server = state()
    digest = agent_service.key_hash(token)
    agent_id = (request.view_args or {}).get("agent_id", "")
    agent = server.agent_keys.get(digest)
    if agent is None:
        if wait:
            raise _refused(wait, "")
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
    audited = request.path not in UNAUDITED and not request.path.startswith("/.well-known/")
    if audited and not g.get("unauthenticated", False) and not g.get("liveness", False):
        # Refused credentials are audited per address and window instead (auth_throttle).
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
