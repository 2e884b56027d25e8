"""Property-based fuzzing of every operation in ``/api/v1/openapi.json``.

schemathesis turns each operation of the served OpenAPI document into a hypothesis
strategy, both valid requests (positive) and requests that break the schema (negative);
the cases go through the quart test client into the real app (auth, schemas, services,
``MemoryStore``). Hypothesis runs in a worker thread and sends each case back into the
trio loop that owns the app, so a failing case is shrunk against the real server.

The property: no response is a 5xx, every response conforms to the schema the document
gives its operation and status (schemathesis' response conformance check), and every 4xx
is the JSON error body ``{error, message, request_id}`` whose ``request_id`` is the
``X-Request-ID`` header.

Random ids only ever reach the 404 branch, so each case may swap path ids and the
reference fields of its body (``owner_id``, ``job_id``, ``target_ids``, ...) for ids of a
small seeded world: an agent with a target, a certificate with an issued version and a
Running deployment, one awaiting its CSR, one awaiting approval. Every operation gets a
fresh world, so one operation's deletes cannot starve the next. Generation is
derandomized; the run sends well over a thousand requests in about half a minute.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import schemathesis
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core import NotSet
from schemathesis.generation import GenerationMode
from schemathesis.schemas import APIOperation
from server_fixtures import (
    BOOT,
    OPS,
    VIEWER,
    Api,
    csr_pem,
    make_settings,
    running_app,
)
from werkzeug.datastructures import Headers

# Per operation and generation mode; raise it for a deeper local run, e.g.
# CERTCTL_FUZZ_EXAMPLES=200 pytest tests/unit/test_server_openapi_fuzz.py
EXAMPLES_PER_MODE = int(os.environ.get("CERTCTL_FUZZ_EXAMPLES", "10"))
MIN_REQUESTS = 1_000
UNDOCUMENTED = {"/api/v1/openapi.json", "/static/<path:filename>"}
AGENT_ROUTE = re.compile(r"^/api/v1/agents/\{agent_id\}/")
CREDENTIALS = ("right", "right", "right", "right", "viewer", "generated")


@dataclass
class World:
    """Ids worth aiming at, per path parameter or body field name."""

    agent_key: str
    ids: dict[str, list[str]] = field(default_factory=dict)

    def choices(self, name: str, path: str) -> list[str]:
        """Seeded ids for ``name``; ``entity_id`` by the resource path (``/api/v1/teams/...``)."""
        if name == "entity_id":
            parts = path.split("/")
            return self.ids.get(parts[3], []) if len(parts) > 3 else []
        return self.ids.get(name, [])


async def seed_world(api: Api) -> World:
    """An agent with a target and three certificates in the states the API acts on."""
    agent = await api.register_agent()
    victim = await api.register_agent()
    target = await api.create_target(agent.id)
    issued, issued_jobs = await api.create_certificate([target])
    work = await api.ok("GET", f"/api/v1/agents/{agent.id}/work", headers=agent.headers)
    item = work["jobs"][0]
    await api.ok(
        "POST",
        f"/api/v1/agents/{agent.id}/csr",
        headers=agent.headers,
        json={"job_id": item["job_id"], "csr_pem": csr_pem(item["common_name"])},
    )
    work = await api.ok("GET", f"/api/v1/agents/{agent.id}/work", headers=agent.headers)
    deployment = work["jobs"][0]["job_id"]
    pending, pending_jobs = await api.create_certificate([target])
    team = await api.ok("POST", "/api/v1/teams", expect=201, json={"name": api.unique("team")})
    owner = await api.create_owner()
    policy = await api.ok(
        "POST", "/api/v1/renewal-policies", expect=201, json={"name": api.unique("policy")}
    )
    profile = await api.ok(
        "POST",
        "/api/v1/profiles",
        expect=201,
        json={"name": api.unique("gated"), "requires_approval": True},
    )
    gated = await api.ok(
        "POST",
        "/api/v1/certificates",
        expect=201,
        json={
            "name": api.unique("gated"),
            "common_name": "gated.example.com",
            "owner_id": owner,
            "certificate_profile_id": profile["id"],
            "target_ids": [target],
        },
    )
    issuer = await api.ok("POST", "/api/v1/issuers", expect=201, json={"name": api.unique("spare")})
    jobs = [*issued_jobs, deployment, *pending_jobs, *gated["job_ids"]]
    return World(
        agent.key,
        {
            "agent_id": [agent.id, victim.id],
            "cert_id": [issued, pending, gated["certificate"]["id"]],
            "certificate_id": [issued, pending],
            "job_id": jobs,
            "issuer_id": ["iss-local", issuer["id"]],
            "owner_id": [owner],
            "team_id": [team["id"]],
            "renewal_policy_id": ["rp-default", policy["id"]],
            "certificate_profile_id": [profile["id"]],
            "target_id": [target],
            "target_ids": [target],
            "teams": [team["id"]],
            "owners": [owner],
            "renewal-policies": ["rp-default", policy["id"]],
            "profiles": [profile["id"]],
            "issuers": ["iss-local", issuer["id"]],
            "targets": [target],
        },
    )


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None


def _query_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return json.dumps(value)


def _query(query: Mapping[str, Any] | None) -> str:
    pairs: list[tuple[str, str]] = []
    for name, value in (query or {}).items():
        items = value if isinstance(value, list) else [value]
        pairs.extend((str(name), _query_value(item)) for item in items)
    return urllib.parse.urlencode(pairs)


def _header_ok(name: str, value: str) -> bool:
    """What an HTTP/1.1 client can put on the wire at all (the rest never reaches us)."""
    token = re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) is not None
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    printable = all(c == "\t" or 32 <= ord(c) != 127 for c in value)
    reserved = name.lower() in {"host", "content-length", "transfer-encoding", "content-type"}
    return token and printable and not reserved


def _credential(op: APIOperation, choice: str, world: World, generated: str | None) -> str:
    if choice == "generated":
        return generated or ""
    if op.path == "/api/v1/agents/register":
        return BOOT["Authorization"]
    if AGENT_ROUTE.match(op.path):
        return f"Bearer {world.agent_key}"
    return (VIEWER if choice == "viewer" else OPS)["Authorization"]


def _link_body(body: Any, world: World, pick: int) -> Any:
    """Swap the body's reference fields for seeded ids (lists for ``target_ids``)."""
    if not isinstance(body, dict):
        return body
    linked = dict(body)
    for name in linked:
        choices = world.choices(name, "")
        if choices:
            chosen = choices[pick % len(choices)]
            linked[name] = [chosen] if name == "target_ids" else chosen
    return linked


def build_request(
    op: APIOperation, case: Any, world: World, link: int | None, credential: str
) -> Request:
    params = dict(case.path_parameters or {})
    if link is not None:
        for name in params:
            choices = world.choices(name, op.path)
            if choices:
                params[name] = choices[link % len(choices)]
    path = op.path
    for name, value in params.items():
        text = value if isinstance(value, str) else _query_value(value)
        path = path.replace("{" + name + "}", urllib.parse.quote(text, safe=""))
    query = _query(case.query)
    if query:
        path = f"{path}?{query}"
    headers = {
        str(k): str(v)
        for k, v in (case.headers or {}).items()
        if k.lower() != "authorization" and _header_ok(str(k), str(v))
    }
    generated = (case.headers or {}).get("Authorization")
    auth = _credential(op, credential, world, generated)
    if auth and _header_ok("Authorization", auth):
        headers["Authorization"] = auth
    body: bytes | None = None
    if not isinstance(case.body, NotSet):
        value = _link_body(case.body, world, link) if link is not None else case.body
        body = value if isinstance(value, bytes) else json.dumps(value).encode()
        headers["Content-Type"] = case.media_type or "application/json"
    return Request(op.method.upper(), path, headers, body)


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)


async def send(api: Api, request: Request) -> tuple[int, Headers, bytes]:
    response = await api.client.open(
        request.path,
        method=request.method,
        headers=request.headers,
        data=request.body,
    )
    return response.status_code, response.headers, await response.get_data()


def check(op: APIOperation, request: Request, status: int, headers: Headers, raw: bytes) -> None:
    where = (
        f"{request.method} {request.path} body={(request.body or b'')[:500]!r} "
        f"headers={request.headers} -> {status}: {raw[:300]!r}"
    )
    assert status < 500, where
    answer = httpx.Response(
        status,
        headers=list(headers.items()),
        content=raw,
        request=httpx.Request(request.method, f"http://localhost{request.path}"),
    )
    answer.elapsed = timedelta(0)  # read by schemathesis; no clock is involved here
    op.validate_response(answer)  # raises, naming the mismatch, if the body breaks the schema
    if status < 400:
        return
    assert headers.get("Content-Type", "").startswith("application/json"), where
    body = json.loads(raw)
    assert isinstance(body, dict), where
    assert set(body) >= {"error", "message", "request_id"}, where
    for name in ("error", "message", "request_id"):
        assert isinstance(body[name], str), where
        assert body[name], where
    assert body["request_id"] == headers.get("X-Request-ID"), where


def fuzz_operation(
    op: APIOperation, mode: GenerationMode, world_of: Any, api: Api, tally: Tally
) -> None:
    """Run hypothesis over ``op`` in this worker thread, each case sent in the trio loop."""

    @settings(
        max_examples=EXAMPLES_PER_MODE,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=op.as_strategy(generation_mode=mode),
        link=st.one_of(st.none(), st.integers(0, 5)),
        credential=st.sampled_from(CREDENTIALS),
    )
    def property_(case: Any, link: int | None, credential: str) -> None:
        request = build_request(op, case, world_of(), link, credential)
        status, headers, raw = trio.from_thread.run(send, api, request)
        tally.sent += 1
        tally.statuses[status] += 1
        tally.per_operation[f"{op.method.upper()} {op.path}"] += 1
        check(op, request, status, headers, raw)

    property_()


def documented_routes(api: Api) -> set[tuple[str, str]]:
    routes = set()
    for rule in api.app.url_map.iter_rules():
        if rule.rule in UNDOCUMENTED:
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes.update((m, path) for m in rule.methods or () if m not in {"HEAD", "OPTIONS"})
    return routes


async def test_openapi_operations_never_answer_5xx(tmp_path: Path) -> None:
    settings_ = make_settings(
        tmp_path, CERTCTL_RATE_LIMIT_ENABLED="false", CERTCTL_AUTH_FAILURE_BURST="100000"
    )
    async with running_app(settings_) as api:
        spec = await api.ok("GET", "/api/v1/openapi.json")
        schema = schemathesis.openapi.from_dict(spec)
        operations = [result.ok() for result in schema.get_all_operations()]
        described = {(op.method.upper(), op.path) for op in operations}
        assert described == documented_routes(api), "openapi.json must describe every route"

        tally = Tally()
        worlds: list[World] = []

        def run_all() -> None:
            for op in operations:
                worlds.append(trio.from_thread.run(seed_world, api))
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    fuzz_operation(op, mode, lambda: worlds[-1], api, tally)

        await trio.to_thread.run_sync(run_all)

    print(
        f"\nopenapi fuzz: {tally.sent} requests over {len(tally.per_operation)} operations; "
        f"statuses {dict(sorted(tally.statuses.items()))}"
    )
    assert len(tally.per_operation) == len(operations)
    assert tally.sent >= MIN_REQUESTS
    assert all(count >= 2 for count in tally.per_operation.values()), tally.per_operation


async def test_every_operation_documents_its_answer_and_its_errors(tmp_path: Path) -> None:
    """Each operation names the schema of its success body and gives the error body
    ``{error, message, request_id}`` for each 4xx it lists (and lists at least one)."""
    async with running_app(make_settings(tmp_path)) as api:
        spec = await api.ok("GET", "/api/v1/openapi.json")
    schemas = spec["components"]["schemas"]
    missing = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            answers = operation.get("responses", {})
            successes = [code for code in answers if code.startswith(("2", "3"))]
            errors = [code for code in answers if code.startswith("4")]
            if not successes or not errors:
                missing.append(f"{where}: answers {sorted(answers)}")
            for code in successes:
                media = answers[code].get("content", {}).values()
                if not any("schema" in one for one in media):
                    missing.append(f"{where} {code}: no schema")
            for code in errors:
                body = answers[code]["content"]["application/json"]["schema"]
                body = schemas.get(body.get("$ref", "").rsplit("/", 1)[-1], body)
                if set(body.get("required", ())) != {"error", "message", "request_id"}:
                    missing.append(f"{where} {code}: not the error body")
    assert not missing, "\n".join(missing)
