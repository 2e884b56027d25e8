"""The control plane's HTTP API, in process: quart test client, real app, ``MemoryStore``.

Every request crosses the whole stack (request id, authentication, rate limit, schemas,
services, error mapping, audit hook), so these tests pin the API's contract: who may call
what, the shape of every error, the agent protocol end to end, the public CRL and the
audit trail of mutating calls.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from quart.wrappers import Response
from server_fixtures import (
    APPROVER,
    BOOT,
    OPS,
    VIEWER,
    Agent,
    Api,
    csr_pem,
    make_settings,
    running_app,
)

from certctl.pki.csr import build_csr
from certctl.pki.keys import generate_key
from certctl.pki.names import SubjectAltNames
from certctl.services.rules import DOMAIN_RULES
from certctl.store.errors import StoreUnavailable
from certctl.store.memory import MemoryStore

PUBLIC_RULES = {"/health", "/ready", "/.well-known/pki/crl/<issuer_id>"}
WRONG_KEY = {"Authorization": "Bearer not-a-key-0123456789abcdef"}
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    # Many tests present wrong credentials on purpose; the throttle has its own tests.
    settings = make_settings(
        tmp_path, CERTCTL_RATE_LIMIT_ENABLED="false", CERTCTL_AUTH_FAILURE_BURST="100000"
    )
    async with running_app(settings) as running:
        yield running


async def assert_error(response: Response, status: int, code: str | None = None) -> dict[str, Any]:
    """``response`` is the JSON error body with ``status``; returns the body."""
    body = await response.get_json()
    raw = await response.get_data()
    assert response.status_code == status, (response.status_code, raw[:300])
    assert response.content_type == "application/json", response.content_type
    assert isinstance(body, dict), raw[:300]
    assert set(body) == {"error", "message", "request_id"}, body
    assert body["message"], body
    assert body["error"], body
    assert body["request_id"], body
    assert body["request_id"] == response.headers["X-Request-ID"], body
    if code is not None:
        assert body["error"] == code, body
    return body


def concrete(rule: str) -> str:
    """A rule with every ``<param>`` replaced by a dummy id."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: f"dummy-{m.group(1)}", rule)


async def issued_deployment(api: Api, agent: Agent, target_id: str) -> tuple[str, str]:
    """A certificate issued for ``agent`` through the API, and its Running deployment job."""
    cert_id, _ = await api.create_certificate([target_id])
    work = await api.ok("GET", f"/api/v1/agents/{agent.id}/work", headers=agent.headers)
    (item,) = [j for j in work["jobs"] if j["certificate_id"] == cert_id]
    await api.ok(
        "POST",
        f"/api/v1/agents/{agent.id}/csr",
        headers=agent.headers,
        json={"job_id": item["job_id"], "csr_pem": csr_pem(item["common_name"])},
    )
    work = await api.ok("GET", f"/api/v1/agents/{agent.id}/work", headers=agent.headers)
    (deployment,) = [j for j in work["jobs"] if j["certificate_id"] == cert_id]
    assert deployment["type"] == "Deployment"
    assert deployment["status"] == "Running"
    return cert_id, deployment["job_id"]


# -- probes ---------------------------------------------------------------------------


async def test_health_and_ready_answer_without_a_key(api: Api) -> None:
    health = await api.call("GET", "/health", headers={})
    ready = await api.call("GET", "/ready", headers={})
    assert health.status_code == 200
    assert await health.get_json() == {"status": "healthy"}
    assert ready.status_code == 200
    assert (await ready.get_json())["status"] == "ready"


class UnreachableStore(MemoryStore):
    async def ready(self) -> None:
        raise StoreUnavailable("database is unreachable: connection refused")


async def test_ready_answers_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    store = UnreachableStore(DOMAIN_RULES, encryption_key="k" * 40)
    async with running_app(make_settings(tmp_path), store) as api:
        response = await api.call("GET", "/ready", headers={})
        body = await assert_error(response, 503)
        assert "unreachable" in body["message"]
        health = await api.call("GET", "/health", headers={})
        assert health.status_code == 200


# -- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    "credential",
    [{}, WRONG_KEY, {"Authorization": f"Basic {OPS['Authorization'][7:]}"}],
    ids=["no-key", "wrong-key", "not-bearer"],
)
async def test_every_route_but_the_public_ones_needs_a_key(
    api: Api, credential: dict[str, str]
) -> None:
    checked = 0
    rules = list(api.app.url_map.iter_rules())
    assert {r.rule for r in rules} >= PUBLIC_RULES
    for rule in rules:
        if rule.rule in PUBLIC_RULES:
            continue
        for method in sorted(rule.methods or ()):
            response = await api.call(method, concrete(rule.rule), headers=credential)
            where = (method, rule.rule)
            assert response.status_code == 401, (where, response.status_code)
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), where
            if method != "HEAD":
                await assert_error(response, 401, "unauthorized")
            checked += 1
    assert checked > 60


async def test_public_routes_answer_without_a_key(api: Api) -> None:
    for path in ("/health", "/ready", "/.well-known/pki/crl/iss-local"):
        response = await api.call("GET", path, headers={})
        assert response.status_code == 200, path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/admin"),
        ("GET", "/api/v1/nothing-here"),
        ("POST", "/api/v1/certificates/x/y/z"),
        ("PATCH", "/api/v1/certificates"),
        ("DELETE", "/health/x"),
        ("GET", "/.well-known/other"),
    ],
)
async def test_unknown_paths_and_methods_answer_401_without_a_key(
    api: Api, method: str, path: str
) -> None:
    response = await api.call(method, path, headers={})
    await assert_error(response, 401, "unauthorized")
    assert "WWW-Authenticate" in response.headers


async def test_unknown_paths_answer_404_and_wrong_methods_405_with_a_key(api: Api) -> None:
    await assert_error(await api.call("GET", "/api/v1/nothing-here"), 404, "not_found")
    await assert_error(await api.call("PATCH", "/api/v1/certificates"), 405)


async def test_agent_routes_refuse_operator_keys_and_the_bootstrap_token(api: Api) -> None:
    agent = await api.register_agent()
    for credential in (OPS, BOOT):
        response = await api.call("GET", f"/api/v1/agents/{agent.id}/work", headers=credential)
        await assert_error(response, 401)
    response = await api.call(
        "POST", "/api/v1/agents/register", headers=OPS, json={"name": "x", "hostname": "x"}
    )
    await assert_error(response, 401)


# -- headers on every response ----------------------------------------------------------


async def test_request_ids_security_headers_and_no_cors_by_default(api: Api) -> None:
    origin = {"Origin": "https://evil.example"}
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("GET", "/health", {}, None),
        ("GET", "/ready", {}, None),
        ("GET", "/.well-known/pki/crl/iss-local", {}, None),
        ("GET", "/api/v1/auth/check", OPS, None),
        ("GET", "/api/v1/certificates", VIEWER, None),
        ("POST", "/api/v1/teams", OPS, {"name": "platform"}),
        ("POST", "/api/v1/teams", OPS, {"name": 5}),
        ("GET", "/api/v1/jobs/job-missing", OPS, None),
        ("GET", "/api/v1/certificates", {}, None),
        ("OPTIONS", "/api/v1/certificates", {}, None),
        ("GET", "/metrics", OPS, None),
    ]
    seen_ids = set()
    for method, path, headers, body in calls:
        response = await api.call(method, path, headers={**headers, **origin}, json=body)
        where = (method, path, response.status_code)
        request_id = response.headers.get("X-Request-ID", "")
        assert re.fullmatch(r"[0-9a-f]{32}", request_id), where
        seen_ids.add(request_id)
        if response.status_code >= 400:
            assert (await response.get_json())["request_id"] == request_id, where
        for name, value in SECURITY_HEADERS.items():
            assert value in response.headers.get(name, ""), (where, name)
        if path.startswith("/api/"):
            assert response.headers.get("Cache-Control") == "no-store", where
        assert "Access-Control-Allow-Origin" not in response.headers, where
        assert "Access-Control-Allow-Credentials" not in response.headers, where
    assert len(seen_ids) == len(calls), "every request gets its own id"


async def test_cors_allows_exactly_the_configured_origins(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CERTCTL_CORS_ORIGINS="https://ops.example")
    async with running_app(settings) as api:
        friend = {"Origin": "https://ops.example"}
        preflight = await api.call("OPTIONS", "/api/v1/certificates", headers=friend)
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://ops.example"
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        listed = await api.call("GET", "/api/v1/certificates", headers={**OPS, **friend})
        assert listed.status_code == 200
        assert listed.headers["Access-Control-Allow-Origin"] == "https://ops.example"
        assert listed.headers["Vary"] == "Origin"
        stranger = {"Origin": "https://evil.example"}
        refused = await api.call("OPTIONS", "/api/v1/certificates", headers=stranger)
        assert refused.status_code == 401
        assert "Access-Control-Allow-Origin" not in refused.headers


# -- bad input ------------------------------------------------------------------------


async def test_a_body_over_the_size_limit_is_413(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, CERTCTL_MAX_BODY_SIZE="4096", CERTCTL_RATE_LIMIT_ENABLED="false"
    )
    async with running_app(settings) as api:
        big = {"name": "big", "description": "x" * 4100}
        await assert_error(
            await api.call("POST", "/api/v1/teams", json=big), 413, "payload_too_large"
        )
        register = {"name": "a" * 200, "hostname": "h", "os": "o" * 4000}
        response = await api.call("POST", "/api/v1/agents/register", headers=BOOT, json=register)
        await assert_error(response, 413, "payload_too_large")
        # As real clients send it: the declared length alone is refused.
        raw = b'{"name": "declared", "description": "' + b"x" * 5000 + b'"}'
        declared = {**OPS, "Content-Type": "application/json", "Content-Length": str(len(raw))}
        response = await api.call("POST", "/api/v1/teams", headers=declared, data=raw)
        await assert_error(response, 413, "payload_too_large")
        teams = await api.ok("GET", "/api/v1/teams")
        assert teams["items"] == [], "a refused body writes nothing"
        assert (await api.ok("GET", "/api/v1/agents"))["items"] == []
        # Just under the limit is no problem: the limit is the setting, not a default.
        fits = {"name": "fits", "description": "x" * 3500}
        await api.ok("POST", "/api/v1/teams", expect=201, json=fits)


JSON = {"Content-Type": "application/json"}
BAD_BODIES: list[tuple[str, str, dict[str, str], Any, bytes | None]] = [
    ("malformed-json", "/api/v1/teams", JSON, None, b"{not json"),
    ("json-array", "/api/v1/teams", JSON, None, b"[1, 2]"),
    ("json-null", "/api/v1/teams", JSON, None, b"null"),
    ("not-utf8", "/api/v1/teams", JSON, None, b'{"name": "\xff\xfe"}'),
    ("nested-too-deep", "/api/v1/teams", JSON, None, b"[" * 50_000 + b"]" * 50_000),
    (
        "deep-config",
        "/api/v1/issuers",
        JSON,
        None,
        b'{"name": "i", "config": ' + b'{"a":' * 2000 + b"1" + b"}" * 2001,
    ),
    (
        "form-body",
        "/api/v1/teams",
        {"Content-Type": "application/x-www-form-urlencoded"},
        None,
        b"name=x",
    ),
    ("no-body", "/api/v1/teams", {}, None, b""),
    ("wrong-type", "/api/v1/teams", {}, {"name": 5}, None),
    ("unknown-field", "/api/v1/teams", {}, {"name": "x", "admin": True}, None),
    ("huge-name", "/api/v1/teams", {}, {"name": "x" * 256}, None),
    ("huge-description", "/api/v1/teams", {}, {"name": "x", "description": "d" * 4097}, None),
    ("control-chars", "/api/v1/teams", {}, {"name": "a\u0000b"}, None),
    (
        "too-many-sans",
        "/api/v1/certificates",
        {},
        {
            "name": "c",
            "common_name": "c.example.com",
            "owner_id": "o",
            "sans": ["a.example.com"] * 101,
        },
        None,
    ),
    (
        "huge-common-name",
        "/api/v1/certificates",
        {},
        {"name": "c", "common_name": "c" * 254, "owner_id": "o"},
        None,
    ),
    (
        "bad-id-pattern",
        "/api/v1/certificates",
        {},
        {"name": "c", "common_name": "c.example.com", "owner_id": "../etc"},
        None,
    ),
    (
        "unknown-reference",
        "/api/v1/certificates",
        {},
        {"name": "c", "common_name": "c.example.com", "owner_id": "nobody"},
        None,
    ),
    ("bad-enum", "/api/v1/targets", {}, {"name": "t", "type": "IIS", "agent_id": "a"}, None),
    (
        "bad-key-rule",
        "/api/v1/profiles",
        {},
        {"name": "p", "allowed_key_algorithms": [{"algorithm": "ECDSA", "min_size": 1}]},
        None,
    ),
    (
        "policy-out-of-range",
        "/api/v1/renewal-policies",
        {},
        {"name": "p", "renewal_window_days": 10**9},
        None,
    ),
    (
        "huge-leaf-validity",
        "/api/v1/issuers",
        {},
        {"name": "i", "config": {"leaf_validity_days": 10**12}},
        None,
    ),
    (
        "string-leaf-validity",
        "/api/v1/issuers",
        {},
        {"name": "i", "config": {"leaf_validity_days": "90"}},
        None,
    ),
    ("bad-ca-path", "/api/v1/issuers", {}, {"name": "i", "config": {"ca_cert_path": 5}}, None),
]


@pytest.mark.parametrize(
    ("path", "headers", "json", "data"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_bad_bodies_are_400(
    api: Api, path: str, headers: dict[str, str], json: Any, data: bytes | None
) -> None:
    response = await api.call("POST", path, headers={**OPS, **headers}, json=json, data=data)
    await assert_error(response, 400, "bad_request")


BAD_QUERIES: list[tuple[str, str, dict[str, str]]] = [
    ("garbage-cursor", "/api/v1/jobs", {"cursor": "garbage"}),
    ("base64-cursor", "/api/v1/certificates", {"cursor": "eyJhIjoxfQ=="}),
    ("audit-cursor", "/api/v1/audit", {"cursor": "Zm9v"}),
    ("huge-cursor", "/api/v1/jobs", {"cursor": "x" * 600}),
    ("bad-job-status", "/api/v1/jobs", {"status": "Bogus"}),
    ("bad-job-type", "/api/v1/jobs", {"type": "Bogus"}),
    ("one-bad-status", "/api/v1/certificates", {"status": "Active,Bogus"}),
    ("lowercase-status", "/api/v1/certificates", {"status": "active"}),
    ("limit-zero", "/api/v1/certificates", {"limit": "0"}),
    ("limit-text", "/api/v1/jobs", {"limit": "ten"}),
    ("limit-huge", "/api/v1/audit", {"limit": "99999999999999999999999"}),
    ("bad-time", "/api/v1/certificates", {"expiring_before": "soon"}),
    ("naive-time", "/api/v1/certificates", {"expiring_before": "2024-01-01T00:00:00"}),
    ("naive-since", "/api/v1/audit", {"since": "2024-01-01T00:00:00"}),
    ("unknown-param", "/api/v1/audit", {"bogus": "1"}),
    ("bad-id-param", "/api/v1/jobs", {"certificate_id": "../x"}),
]


@pytest.mark.parametrize(
    ("path", "query"), [case[1:] for case in BAD_QUERIES], ids=[case[0] for case in BAD_QUERIES]
)
async def test_bad_query_strings_are_400(api: Api, path: str, query: dict[str, str]) -> None:
    await assert_error(await api.call("GET", path, query=query), 400, "bad_request")


async def test_bad_values_on_action_routes_are_4xx(api: Api) -> None:
    response = await api.call("DELETE", "/api/v1/agents/agent-x", query={"force": "maybe"})
    await assert_error(response, 400)
    response = await api.call("POST", "/api/v1/certificates/cert-x/revoke", json={"reason": "Oops"})
    await assert_error(response, 400)
    response = await api.call("POST", "/api/v1/certificates/cert-x/renew", json={"force": "maybe"})
    await assert_error(response, 400)
    response = await api.call("POST", "/api/v1/certificates/cert-x/renew", json={})
    await assert_error(response, 404, "not_found")
    await assert_error(await api.call("GET", "/api/v1/jobs/job-missing"), 404, "not_found")
    await assert_error(await api.call("GET", "/.well-known/pki/crl/nope", headers={}), 404)


async def test_cursors_the_api_issued_work(api: Api) -> None:
    agent = await api.register_agent()
    target = await api.create_target(agent.id)
    for _ in range(3):
        await api.create_certificate([target])
    first = await api.ok("GET", "/api/v1/jobs", query={"limit": "2"})
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    rest = await api.ok("GET", "/api/v1/jobs", query={"limit": "2", "cursor": first["next_cursor"]})
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    ids = {j["id"] for j in first["items"]} | {j["id"] for j in rest["items"]}
    assert len(ids) == 3


async def test_target_update_with_nulls_leaves_the_target_as_is(api: Api) -> None:
    agent = await api.register_agent()
    target_id = await api.create_target(agent.id)
    before = await api.ok("GET", f"/api/v1/targets/{target_id}")
    body = {"name": None, "config": None, "enabled": None}
    after = await api.ok("PUT", f"/api/v1/targets/{target_id}", json=body)
    assert after == before
    renamed = await api.ok("PUT", f"/api/v1/targets/{target_id}", json={"name": "renamed"})
    assert renamed["name"] == "renamed"
    assert renamed["config"] == before["config"]
    await assert_error(
        await api.call("PUT", f"/api/v1/targets/{target_id}", json={"config": {"x": 1}}), 400
    )


GARBAGE_CSR = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"


async def test_bad_csrs_are_422_and_fail_the_job(api: Api) -> None:
    agent = await api.register_agent()
    target = await api.create_target(agent.id)
    path = f"/api/v1/agents/{agent.id}/csr"
    for bad in ("not a pem", GARBAGE_CSR, csr_pem("evil.example.com"), "\u00a0"):
        cert_id, (job_id,) = await api.create_certificate([target], common_name="a.example.com")
        response = await api.call(
            "POST", path, headers=agent.headers, json={"job_id": job_id, "csr_pem": bad}
        )
        body = await assert_error(response, 422, "unprocessable")
        assert "refused" in body["message"]
        job = await api.ok("GET", f"/api/v1/jobs/{job_id}")
        assert job["status"] == "Failed"
        assert job["last_error"]
        assert job["next_retry_at"]
        versions = await api.ok("GET", f"/api/v1/certificates/{cert_id}/versions")
        assert versions["items"] == []
    # The job is no longer AwaitingCSR: a good CSR now is a conflict, not a 500.
    good = csr_pem("a.example.com")
    response = await api.call(
        "POST", path, headers=agent.headers, json={"job_id": job_id, "csr_pem": good}
    )
    await assert_error(response, 409, "conflict")


async def test_csr_bodies_outside_the_schema_are_400_and_leave_the_job(api: Api) -> None:
    agent = await api.register_agent()
    target = await api.create_target(agent.id)
    path = f"/api/v1/agents/{agent.id}/csr"
    _, (job_id,) = await api.create_certificate([target], common_name="b.example.com")
    for body in (
        {"job_id": job_id, "csr_pem": "x" * 70_000},
        {"job_id": job_id},
        {"job_id": job_id, "csr_pem": 5},
        {"job_id": job_id, "csr_pem": ""},
        {"job_id": job_id, "csr_pem": csr_pem("b.example.com"), "key_pem": "x"},
    ):
        response = await api.call("POST", path, headers=agent.headers, json=body)
        await assert_error(response, 400, "bad_request")
    response = await api.call(
        "POST",
        path,
        headers=agent.headers,
        json={"job_id": "job-missing", "csr_pem": csr_pem("b.example.com")},
    )
    await assert_error(response, 404, "not_found")
    assert (await api.ok("GET", f"/api/v1/jobs/{job_id}"))["status"] == "AwaitingCSR"


# -- authorization --------------------------------------------------------------------


async def test_only_another_admin_key_approves_or_rejects(api: Api) -> None:
    for action in ("approve", "reject"):
        response = await api.call("POST", f"/api/v1/jobs/job-x/{action}", headers=VIEWER)
        await assert_error(response, 403, "forbidden")
    agent = await api.register_agent()
    target = await api.create_target(agent.id)
    profile = await api.ok(
        "POST", "/api/v1/profiles", expect=201, json={"name": "gated", "requires_approval": True}
    )
    owner = await api.create_owner()
    jobs = []
    for name in ("one", "two"):
        created = await api.ok(
            "POST",
            "/api/v1/certificates",
            expect=201,
            json={
                "name": name,
                "common_name": f"{name}.example.com",
                "owner_id": owner,
                "certificate_profile_id": profile["id"],
                "target_ids": [target],
            },
        )
        jobs.append(created["job_ids"][0])
    for job_id, action in zip(jobs, ("approve", "reject"), strict=True):
        response = await api.call("POST", f"/api/v1/jobs/{job_id}/{action}", headers=VIEWER)
        await assert_error(response, 403, "forbidden")
        assert (await api.ok("GET", f"/api/v1/jobs/{job_id}"))["status"] == "AwaitingApproval"
    for job_id, action in zip(jobs, ("approve", "reject"), strict=True):
        # The jobs were requested by "ops": the two-person rule wants another admin.
        assert (await api.ok("GET", f"/api/v1/jobs/{job_id}"))["requested_by"] == "ops"
        own = await api.call("POST", f"/api/v1/jobs/{job_id}/{action}", headers=OPS)
        error = await assert_error(own, 403, "forbidden")
        assert "two-person rule" in error["message"]
    approved = await api.ok("POST", f"/api/v1/jobs/{jobs[0]}/approve", headers=APPROVER)
    rejected = await api.ok("POST", f"/api/v1/jobs/{jobs[1]}/reject", headers=APPROVER)
    assert approved["status"] != "AwaitingApproval"
    assert rejected["status"] == "Cancelled"
    await assert_error(await api.call("POST", "/api/v1/jobs/job-x/approve"), 404)


async def test_the_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CERTCTL_RATE_LIMIT_RPS="1", CERTCTL_RATE_LIMIT_BURST="2")
    async with running_app(settings) as api:
        statuses = [(await api.call("GET", "/api/v1/auth/check")).status_code for _ in range(2)]
        assert statuses == [200, 200]
        limited = await api.call("GET", "/api/v1/auth/check")
        await assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["Retry-After"]) >= 1
        # The bucket is per key: another operator is not slowed down.
        other = await api.call("GET", "/api/v1/auth/check", headers=VIEWER)
        assert other.status_code == 200


# -- the agent protocol ---------------------------------------------------------------


async def test_a_certificate_with_a_target_starts_its_issuance_job(api: Api) -> None:
    agent = await api.register_agent()
    target = await api.create_target(agent.id)
    cert_id, job_ids = await api.create_certificate([target])
    assert len(job_ids) == 1
    job = await api.ok("GET", f"/api/v1/jobs/{job_ids[0]}")
    assert job["type"] == "Issuance"
    assert job["status"] == "AwaitingCSR"
    assert job["certificate_id"] == cert_id
    cert = await api.ok("GET", f"/api/v1/certificates/{cert_id}")
    assert cert["expires_at"] is None
    assert cert["status"] == "Pending"
    _, none = await api.create_certificate([])
    assert none == []


async def test_issue_and_deploy_over_the_api(api: Api) -> None:
    agent = await api.register_agent()
    target = await api.create_target(agent.id)
    cert_id, (issuance,) = await api.create_certificate([target], common_name="www.example.com")
    await api.ok("POST", f"/api/v1/agents/{agent.id}/heartbeat", headers=agent.headers, json={})

    work = await api.ok("GET", f"/api/v1/agents/{agent.id}/work", headers=agent.headers)
    assert work["count"] == 1
    (item,) = work["jobs"]
    assert item["job_id"] == issuance
    assert item["type"] == "Issuance"
    assert item["status"] == "AwaitingCSR"
    assert item["common_name"] == "www.example.com"
    assert (item["key_algorithm"], item["key_size"]) == ("ECDSA", 256)

    key = generate_key()
    request = build_csr(
        key, common_name="www.example.com", sans=SubjectAltNames(dns=("www.example.com",))
    ).decode()
    signed = await api.ok(
        "POST",
        f"/api/v1/agents/{agent.id}/csr",
        headers=agent.headers,
        json={"job_id": issuance, "csr_pem": request},
    )
    assert signed["job_id"] == issuance
    assert signed["status"] == "Completed"
    version = signed["version"]
    assert set(version) >= {"id", "serial_number", "fingerprint_sha256", "not_after"}

    work = await api.ok("GET", f"/api/v1/agents/{agent.id}/work", headers=agent.headers)
    (deploy,) = work["jobs"]
    assert deploy["type"] == "Deployment"
    assert deploy["status"] == "Running"
    assert deploy["target"]["id"] == target
    assert deploy["target"]["type"] == "NGINX"
    assert deploy["target"]["config"]["reload_command"] == "/bin/true"
    again = await api.ok("GET", f"/api/v1/agents/{agent.id}/work", headers=agent.headers)
    assert again["jobs"] == [], "a claimed deployment is handed out once"

    material = await api.ok(
        "GET", f"/api/v1/agents/{agent.id}/certificates/{cert_id}", headers=agent.headers
    )
    assert material["version_id"] == version["id"]
    assert "PRIVATE KEY" not in str(material)
    leaf = x509.load_pem_x509_certificate(material["cert_pem"].encode())
    assert leaf.fingerprint(hashes.SHA256()).hex() == version["fingerprint_sha256"]
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert (
        leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == public
    ), "the leaf carries the agent's key"
    assert material["chain_pem"].startswith("-----BEGIN CERTIFICATE-----")

    served = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    report = {
        "status": "Completed",
        "verification": {"status": "Success", "fingerprint": served, "error": None},
    }
    done = await api.ok(
        "POST",
        f"/api/v1/agents/{agent.id}/jobs/{deploy['job_id']}/status",
        headers=agent.headers,
        json=report,
    )
    assert done["status"] == "Completed"
    job = await api.ok("GET", f"/api/v1/jobs/{deploy['job_id']}")
    assert job["status"] == "Completed"
    assert job["completed_at"]
    assert job["verification_status"] == "Success"
    assert job["verification_fingerprint"] == served
    cert = await api.ok("GET", f"/api/v1/certificates/{cert_id}")
    assert cert["status"] == "Active"
    assert cert["last_deployment_at"]
    assert cert["expires_at"] == version["not_after"]
    issued = await api.ok("GET", f"/api/v1/jobs/{issuance}")
    assert issued["status"] == "Completed"


async def test_an_agent_key_only_opens_its_own_paths(api: Api) -> None:
    mine = await api.register_agent()
    theirs = await api.register_agent()
    await api.create_target(theirs.id)
    calls = [
        ("POST", "heartbeat", {}),
        ("GET", "work", None),
        ("GET", "targets", None),
        ("POST", "csr", {"job_id": "job-x", "csr_pem": "x"}),
        ("GET", "certificates/cert-x", None),
        ("GET", "jobs/job-x", None),
        ("POST", "jobs/job-x/status", {"status": "Completed"}),
    ]
    for method, tail, body in calls:
        path = f"/api/v1/agents/{theirs.id}/{tail}"
        # Twice: the second call is answered from the agent-key cache.
        for _ in range(2):
            response = await api.call(method, path, headers=mine.headers, json=body)
            await assert_error(response, 403, "forbidden")
    own = await api.ok("GET", f"/api/v1/agents/{theirs.id}/targets", headers=theirs.headers)
    assert len(own["targets"]) == 1


async def test_an_agent_cannot_read_or_report_another_agents_jobs(api: Api) -> None:
    mine = await api.register_agent()
    theirs = await api.register_agent()
    await api.create_target(mine.id)
    their_target = await api.create_target(theirs.id)
    their_cert, their_deployment = await issued_deployment(api, theirs, their_target)
    _, (their_issuance,) = await api.create_certificate([their_target])
    base = f"/api/v1/agents/{mine.id}"
    for job_id in (their_issuance, their_deployment):
        response = await api.call("GET", f"{base}/jobs/{job_id}", headers=mine.headers)
        await assert_error(response, 403, "forbidden")
        response = await api.call(
            "POST",
            f"{base}/jobs/{job_id}/status",
            headers=mine.headers,
            json={"status": "Failed", "error": "sabotage"},
        )
        await assert_error(response, 403, "forbidden")
    response = await api.call(
        "POST",
        f"{base}/csr",
        headers=mine.headers,
        json={"job_id": their_issuance, "csr_pem": csr_pem("x.example.com")},
    )
    await assert_error(response, 403, "forbidden")
    response = await api.call("GET", f"{base}/certificates/{their_cert}", headers=mine.headers)
    await assert_error(response, 403, "forbidden")
    assert (await api.ok("GET", f"/api/v1/jobs/{their_deployment}"))["status"] == "Running"
    assert (await api.ok("GET", f"/api/v1/jobs/{their_issuance}"))["status"] == "AwaitingCSR"
    # The owner still can.
    own = await api.ok(
        "GET", f"/api/v1/agents/{theirs.id}/jobs/{their_deployment}", headers=theirs.headers
    )
    assert own["id"] == their_deployment


async def test_a_retired_agent_gets_410(api: Api) -> None:
    agent = await api.register_agent()
    await api.create_target(agent.id)
    heartbeat = f"/api/v1/agents/{agent.id}/heartbeat"
    await api.ok("POST", heartbeat, headers=agent.headers, json={})  # now cached
    await assert_error(await api.call("DELETE", f"/api/v1/agents/{agent.id}"), 409, "conflict")
    retired = await api.ok(
        "DELETE", f"/api/v1/agents/{agent.id}", query={"force": "true", "reason": "x"}
    )
    assert retired["retired_at"]
    await assert_error(
        await api.call("POST", heartbeat, headers=agent.headers, json={}), 410, "gone"
    )
    work = await api.call("GET", f"/api/v1/agents/{agent.id}/work", headers=agent.headers)
    await assert_error(work, 410, "gone")
    targets = await api.call("GET", f"/api/v1/agents/{agent.id}/targets", headers=agent.headers)
    await assert_error(targets, 410, "gone")


async def test_a_failed_deployment_is_retried_later(api: Api) -> None:
    agent = await api.register_agent()
    target = await api.create_target(agent.id)
    cert_id, deployment = await issued_deployment(api, agent, target)
    error = "reload failed: nginx: [emerg] bad config; the previous files were restored"
    reported = await api.ok(
        "POST",
        f"/api/v1/agents/{agent.id}/jobs/{deployment}/status",
        headers=agent.headers,
        json={"status": "Failed", "error": error, "verification": {"status": "Skipped"}},
    )
    assert reported["status"] == "Failed"
    job = await api.ok("GET", f"/api/v1/jobs/{deployment}")
    assert job["status"] == "Failed"
    assert job["attempts"] == 1
    assert job["last_error"] == error
    assert job["next_retry_at"]
    cert = await api.ok("GET", f"/api/v1/certificates/{cert_id}")
    assert cert["last_deployment_at"] is None
    again = await api.call(
        "POST",
        f"/api/v1/agents/{agent.id}/jobs/{deployment}/status",
        headers=agent.headers,
        json={"status": "Completed"},
    )
    await assert_error(again, 409, "conflict")


# -- CRL ------------------------------------------------------------------------------


async def test_the_crl_is_public_and_cacheable(api: Api) -> None:
    response = await api.call("GET", "/.well-known/pki/crl/iss-local", headers={})
    assert response.status_code == 200
    assert response.content_type == "application/pkix-crl"
    etag = response.headers["ETag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    crl = x509.load_der_x509_crl(await response.get_data())
    names = crl.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert names
    assert names[0].value == "certctl Local CA"

    cached = await api.call(
        "GET", "/.well-known/pki/crl/iss-local", headers={"If-None-Match": etag}
    )
    assert cached.status_code == 304
    assert await cached.get_data() == b""
    assert cached.headers["ETag"] == etag
    stale = await api.call(
        "GET", "/.well-known/pki/crl/iss-local", headers={"If-None-Match": '"other"'}
    )
    assert stale.status_code == 200
    for header in (f"W/{etag}", f'"other", {etag}', "*"):
        again = await api.call(
            "GET", "/.well-known/pki/crl/iss-local", headers={"If-None-Match": header}
        )
        assert again.status_code == 304, header


# -- audit ----------------------------------------------------------------------------


async def test_every_mutating_call_is_audited_with_its_key_name(api: Api) -> None:
    team = await api.ok("POST", "/api/v1/teams", expect=201, json={"name": "platform"})
    await api.ok("PUT", f"/api/v1/teams/{team['id']}", json={"name": "platform-2"})
    await api.ok("POST", "/api/v1/teams", expect=403, headers=VIEWER, json={"name": "viewers"})
    await api.ok("DELETE", f"/api/v1/teams/{team['id']}")
    refused = await api.call("POST", "/api/v1/owners", json={"name": 5})
    agent = await api.register_agent("web-01")
    heartbeat = f"/api/v1/agents/{agent.id}/heartbeat"
    await api.ok("POST", heartbeat, headers=agent.headers, json={"version": "1.2.3"})
    for _ in range(3):
        await api.call("GET", "/health", headers={})
        await api.call("GET", "/ready", headers={})
    await api.flush_audit()

    posts = (await api.ok("GET", "/api/v1/audit", query={"action": "api_post"}))["items"]
    by_actor = {e["actor"]: e for e in posts if e["resource_id"] == "/api/v1/teams"}
    assert set(by_actor) == {"ops", "viewer"}
    event = by_actor["ops"]
    assert event["resource_type"] == "api"
    assert event["actor_type"] == "User"
    details = event["details"]
    assert details["method"] == "POST"
    assert details["status"] == 201
    assert details["body_sha256"]
    assert details["request_id"]
    assert details["latency_ms"] >= 0
    for action, method in (("api_put", "PUT"), ("api_delete", "DELETE")):
        items = (await api.ok("GET", "/api/v1/audit", query={"action": action}))["items"]
        assert [(e["actor"], e["details"]["method"]) for e in items] == [("ops", method)]
        assert items[0]["resource_id"] == f"/api/v1/teams/{team['id']}"
    (bad,) = [e for e in posts if e["resource_id"] == "/api/v1/owners"]
    assert bad["actor"] == "ops"
    assert bad["details"]["status"] == 400
    assert bad["details"]["request_id"] == refused.headers["X-Request-ID"]
    # A heartbeat is liveness, counted in metrics instead of written as an audit row.
    assert not [e for e in posts if e["resource_id"] == heartbeat]
    (registered,) = [e for e in posts if e["resource_id"] == "/api/v1/agents/register"]
    assert registered["actor"] == "agent-bootstrap"
    assert registered["actor_type"] == "Agent"
    assert registered["details"]["body_sha256"]
    for path in ("/health", "/ready"):
        probes = await api.ok("GET", "/api/v1/audit", query={"resource_id": path})
        assert probes["items"] == []
