"""The trust boundary at the API: roles from the one route table, the two-person rule,
defence-in-depth refusals of target commands and CA paths, throttled failed
authentication, and 405/Allow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from server_fixtures import (
    OPERATOR,
    VIEWER,
    Api,
    make_settings,
    running_app,
)
from test_server_api import assert_error, concrete

from certctl.server.access import ROUTES, Access

MUTATING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
WRONG = {"Authorization": "Bearer wrong-key-0123456789abcdef0123"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = make_settings(tmp_path, CERTCTL_RATE_LIMIT_ENABLED="false")
    async with running_app(settings) as running:
        yield running


def routes(api: Api) -> list[tuple[str, str, Access]]:
    """Every (method, rule) of the app with the access the table gives it."""
    found = []
    for rule in api.app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, rule.rule, ROUTES[rule.endpoint]))
    return found


async def test_the_table_names_exactly_the_routes_of_the_app(api: Api) -> None:
    endpoints = {rule.endpoint for rule in api.app.url_map.iter_rules()}
    assert endpoints == set(ROUTES)
    for method, rule, access in routes(api):
        if method in MUTATING and access not in (Access.AGENT, Access.BOOTSTRAP):
            assert access in (Access.OPERATOR, Access.ADMIN), (method, rule)


async def test_route_by_role_matrix(api: Api) -> None:
    checked = 0
    for method, rule, access in routes(api):
        if access.role is None:
            continue
        path = concrete(rule)
        body: Any = {} if method in MUTATING else None
        for key, name in ((VIEWER, "viewer"), (OPERATOR, "operator")):
            response = await api.call(method, path, headers=key, json=body)
            refused = (name == "viewer" and method in MUTATING) or access is Access.ADMIN
            where = (method, rule, name, response.status_code)
            if refused:
                error = await assert_error(response, 403, "forbidden")
                assert f"needs {access.role}" in error["message"], where
            else:
                assert response.status_code not in (401, 403), where
            checked += 1
    assert checked > 80


async def test_viewers_read_and_operators_run_the_lifecycle(api: Api) -> None:
    agent = await api.register_agent()
    target = await api.create_target(agent.id)
    cert_id, _ = await api.create_certificate([target])
    assert (
        await api.call("GET", f"/api/v1/certificates/{cert_id}", headers=VIEWER)
    ).status_code == 200
    renewed = await api.call(
        "POST", f"/api/v1/certificates/{cert_id}/renew", headers=OPERATOR, json={"force": True}
    )
    assert renewed.status_code == 202
    await assert_error(
        await api.call("PUT", f"/api/v1/targets/{target}", headers=OPERATOR, json={"name": "x"}),
        403,
    )
    await assert_error(
        await api.call("DELETE", f"/api/v1/agents/{agent.id}", headers=OPERATOR), 403
    )
    check = await api.ok("GET", "/api/v1/auth/check", headers=VIEWER)
    assert (check["user"], check["role"]) == ("viewer", "viewer")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reload_command": ["sh", "-c", "id > /tmp/x"]}, "reload_command"),
        ({"reload_command": "sh -c 'touch /tmp/x'"}, "reload_command"),
        ({"validate_command": ["/usr/bin/python3", "-c", "print(1)"]}, "validate_command"),
        ({"reload_command": ["env", "sh", "-c", "x"]}, "reload_command"),
        ({"reload_command": ["bin/reload"]}, "reload_command"),
        ({"cert_path": "etc/nginx/cert.pem"}, "cert_path"),
        ({"cert_path": "/etc/nginx/../shadow"}, "cert_path"),
        ({"key_file_mode": "4755"}, "key_file_mode"),
        ({"cert_file_mode": "2644"}, "cert_file_mode"),
        ({"binary": "/bin/bash"}, "binary"),
        ({"cert_file_owner": "root;id", "cert_file_group": "root"}, "cert_file_owner"),
    ],
)
async def test_the_server_refuses_what_no_host_should_run_or_write(
    api: Api, change: dict[str, Any], field: str
) -> None:
    agent = await api.register_agent()
    config = {
        "cert_path": "/etc/nginx/certs/cert.pem",
        "key_path": "/etc/nginx/certs/key.pem",
        "reload_command": "nginx -s reload",
        "validate_command": "nginx -t",
    } | change
    response = await api.call(
        "POST",
        "/api/v1/targets",
        json={"name": "web", "type": "NGINX", "agent_id": agent.id, "config": config},
    )
    error = await assert_error(response, 400)
    assert field in error["message"]


@pytest.mark.parametrize("key", ["ca_cert_path", "ca_key_path"])
async def test_ca_material_never_comes_from_the_api(api: Api, tmp_path: Path, key: str) -> None:
    existing = tmp_path / "real-ca-key.pem"
    existing.write_text("secret")
    messages = set()
    for path in (str(existing), "/nonexistent/ca.pem", "/etc/shadow"):
        response = await api.call(
            "POST", "/api/v1/issuers", json={"name": "i", "config": {key: path}}
        )
        error = await assert_error(response, 400)
        assert "certctl issuer import-ca" in error["message"]
        messages.add(error["message"])
    assert len(messages) == 1, "the answer must not depend on whether the path exists"
    created = await api.ok("POST", "/api/v1/issuers", expect=201, json={"name": "fresh"})
    updated = await api.call(
        "PUT",
        f"/api/v1/issuers/{created['id']}",
        json={"name": "fresh", "config": {key: str(existing)}},
    )
    await assert_error(updated, 400)


async def test_failed_authentication_is_throttled_and_audited_in_aggregate(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, CERTCTL_RATE_LIMIT_ENABLED="false")
    async with running_app(settings) as api:
        statuses = [
            (await api.call("GET", "/api/v1/certificates", headers=WRONG)).status_code
            for _ in range(300)
        ]
        assert statuses[:20] == [401] * 20  # the burst
        assert statuses.count(429) >= 250
        throttled = await api.call("GET", "/api/v1/certificates", headers=WRONG)
        assert throttled.headers["Retry-After"].isdigit()
        # A valid key from the same address still works: it is checked in memory.
        assert (await api.call("GET", "/api/v1/certificates")).status_code == 200
    # Shutting the app down closed the failure windows into the audit.
    events = await api.state.services.store.list_audit(limit=1000)
    failures = [e for e in events.items if e.action == "auth_failed"]
    assert len(failures) == 1
    details = failures[0].details
    assert details["failures"] + details["throttled"] == 301
    assert details["paths"] == ["/api/v1/certificates"]
    assert not [e for e in events.items if e.action == "api_get" and e.actor == "anonymous"]


async def test_405_names_the_allowed_methods(api: Api) -> None:
    response = await api.call("PATCH", "/api/v1/certificates")
    error = await assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}
    assert "Allow" in error["message"]
