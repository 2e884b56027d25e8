"""Hostile characters in every part of every request: refused with 400 before services,
the store and the audit see them, and nothing in the background dies of them.

Runs on both stores: PostgreSQL refuses NUL in text outright, which is how one such
request once stopped the audit writer and, with it, the scheduler.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio
from server_fixtures import OPS, make_settings, running_app
from test_server_api import assert_error, issued_deployment

from certctl.core.text import FREE_TEXT_LIMIT
from certctl.server.access import Access, access_of
from certctl.server.audit_log import LOOP as AUDIT_LOOP
from certctl.server.metrics import SCHEDULER_LEADER
from certctl.server.scheduler import Intervals, Scheduler
from certctl.server.supervisor import Supervisor
from certctl.services.context import Services
from certctl.store.base import AuditQuery, Store

HOSTILE = ("\x00", "\x85", "\u202e", "\x1b")
S = timedelta(seconds=1)


def scheduler_task() -> Callable[[Services, Supervisor], Awaitable[None]]:
    intervals = Intervals(renewal=60 * S, jobs=S, retries=S, timeouts=S, agent_health=S)

    async def run(services: Services, supervisor: Supervisor) -> None:
        await Scheduler(services, intervals, supervisor=supervisor).run()

    return run


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.01)


def fill(rule: str, char: str, agent_id: str | None = None) -> str:
    """The rule with every parameter holding ``char`` (percent-encoded, as on the wire);
    with ``agent_id``, the agent's own id stands in its place."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return agent_id if agent_id and name == "agent_id" else quote(f"id{char}{name}")

    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", value, rule)


async def test_no_route_answers_5xx_to_hostile_characters_and_nothing_stops(
    tmp_path: Path, store: Store
) -> None:
    settings = make_settings(
        tmp_path, CERTCTL_RATE_LIMIT_ENABLED="false", CERTCTL_AUTH_FAILURE_BURST="100000"
    )
    background = {"scheduler": scheduler_task()}
    async with running_app(settings, store, background=background) as api:
        await until(lambda: SCHEDULER_LEADER._value.get() == 1)
        agent = await api.register_agent()
        sent = 0
        for rule in api.app.url_map.iter_rules():
            access = access_of(rule.endpoint)
            headers = agent.headers if access is Access.AGENT else OPS
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                for char in HOSTILE:
                    for path, query, body in requests(rule.rule, agent.id, char):
                        response = await api.call(
                            method, path, headers=headers, query=query, json=body
                        )
                        assert response.status_code < 500, (method, path, query, body)
                        sent += 1
        assert sent > 1000
        await api.flush_audit()
        marker = await api.call("GET", "/api/v1/certificates", query={"limit": "1"})
        await api.flush_audit()
        request_id = marker.headers["X-Request-ID"]
        recent = await store.list_audit(AuditQuery(action="api_get"), limit=1000)
        assert any(e.details.get("request_id") == request_id for e in recent.items)
        assert SCHEDULER_LEADER._value.get() == 1
        ready = await api.call("GET", "/ready", headers={})
        assert ready.status_code == 200, await ready.get_data()
        assert api.state.supervisor.unhealthy() == []
        # Not one failed write of the audit, either: every row was storable.
        health = api.state.supervisor.health(AUDIT_LOOP)
        assert health is not None
        assert health.failures == 0
        assert health.last_error == ""


def requests(rule: str, agent_id: str, char: str) -> list[tuple[str, dict[str, str] | None, Any]]:
    """Hostile path parameters, query values and names, and body strings and keys."""
    clean = fill(rule, "", agent_id)
    return [
        (fill(rule, char), None, {}),
        (clean, {"status": f"Active{char}"}, None),
        (clean, {f"k{char}": "v"}, None),
        (clean, None, {"name": f"web{char}", "config": {f"key{char}": "v"}}),
        (clean, None, {"job_id": "j", "csr_pem": f"-----BEGIN{char}"}),
    ]


async def test_each_place_is_refused_with_400_naming_it(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path)) as api:
        cases = [
            (f"/api/v1/certificates/{quote('a' + chr(0) + 'b')}", None, None, "request path"),
            ("/api/v1/certificates", {"owner_id": "a\u202eb"}, None, "query parameter"),
            ("/api/v1/certificates", {"a\x85": "b"}, None, "query parameter name"),
        ]
        for path, query, body, where in cases:
            error = await assert_error(await api.call("GET", path, query=query, json=body), 400)
            assert where in error["message"]
        body = {"name": "t\x00", "email": "e@example.com"}
        error = await assert_error(await api.call("POST", "/api/v1/owners", json=body), 400)
        assert "U+0000" in error["message"]
        body = {"name": "lone \ud800 surrogate", "email": "e@example.com"}
        error = await assert_error(await api.call("POST", "/api/v1/owners", json=body), 400)
        assert "U+D800" in error["message"]
        # Names refuse even newlines and tabs; the schema says which field.
        body = {"name": "two\nlines", "email": "e@example.com"}
        error = await assert_error(await api.call("POST", "/api/v1/owners", json=body), 400)
        assert "name" in error["message"]


async def test_a_multi_line_error_report_is_stored_verbatim_and_bounded(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path)) as api:
        agent = await api.register_agent()
        target = await api.create_target(agent.id)
        output = 'nginx: [emerg] unknown directive "x"\n\tin /etc/nginx/nginx.conf:3\n'
        for error, expected in (
            (output, output),
            (output + "y" * (3 * FREE_TEXT_LIMIT), None),
        ):
            _, job_id = await issued_deployment(api, agent, target)
            path = f"/api/v1/agents/{agent.id}/jobs/{job_id}/status"
            await api.ok(
                "POST", path, headers=agent.headers, json={"status": "Failed", "error": error}
            )
            job = await api.ok("GET", f"/api/v1/jobs/{job_id}")
            assert job["status"] == "Failed"
            stored = job["last_error"]
            if expected is not None:
                assert stored == expected
            else:
                assert stored.startswith(output)
                assert len(stored) <= FREE_TEXT_LIMIT
                assert stored.endswith("y" * 100)
                assert "characters cut by certctl ...]" in stored
        refused = await api.call(
            "POST",
            f"/api/v1/agents/{agent.id}/jobs/{job_id}/status",
            headers=agent.headers,
            json={"status": "Failed", "error": "colour \x1b[31m"},
        )
        await assert_error(refused, 400)
