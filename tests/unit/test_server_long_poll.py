"""``GET /api/v1/agents/{id}/work?wait=S`` through the whole app (quart test client,
``MemoryStore``, the app's own background loops), in trio's virtual time: the wait the
server grants, the facts carried in headers, the per-process cap, shutdown, and what the
audit trail keeps of polls and heartbeats."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from server_fixtures import Agent, Api, make_settings, running_app
from test_server_api import assert_error

from certctl.server.app import stopping
from certctl.services.metrics import REGISTRY


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = make_settings(
        tmp_path,
        CERTCTL_RATE_LIMIT_ENABLED="false",
        CERTCTL_AGENT_POLL_WAIT_MAX="50s",
        CERTCTL_MAX_WAITING_AGENTS="2",
    )
    async with running_app(settings) as running:
        yield running


def work_path(agent: Agent) -> str:
    return f"/api/v1/agents/{agent.id}/work"


class Poll:
    def __init__(self) -> None:
        self.body: Any = None

    async def run(self, api: Api, agent: Agent, wait: int, headers: dict[str, str]) -> None:
        self.body = await api.ok(
            "GET", work_path(agent), headers=agent.headers | headers, query={"wait": str(wait)}
        )


async def held(api: Api, nursery: trio.Nursery, agent: Agent, wait: int = 40, **h: str) -> Poll:
    poll = Poll()
    nursery.start_soon(poll.run, api, agent, wait, h)
    await trio.testing.wait_all_tasks_blocked()
    assert poll.body is None, "the poll should be held"
    return poll


async def test_a_held_poll_returns_the_job_created_meanwhile(api: Api, autojump_clock: Any) -> None:
    agent = await api.register_agent()
    target = await api.create_target(agent.id)
    async with trio.open_nursery() as nursery:
        poll = await held(api, nursery, agent)
        started = trio.current_time()
        cert_id, _ = await api.create_certificate([target])
        await trio.testing.wait_all_tasks_blocked()
        assert poll.body is not None
        woken_after = trio.current_time() - started
    assert [j["certificate_id"] for j in poll.body["jobs"]] == [cert_id]
    assert poll.body["wait_seconds"] == 40
    assert woken_after < 40 / 3  # woken by the job, not by the end of the wait


async def test_the_wait_is_bounded_by_the_server_and_zero_is_a_short_poll(
    api: Api, autojump_clock: Any
) -> None:
    agent = await api.register_agent()
    started = trio.current_time()
    body = await api.ok("GET", work_path(agent), headers=agent.headers, query={"wait": "600"})
    assert body == {"count": 0, "jobs": [], "wait_seconds": 50}
    assert trio.current_time() - started >= 50  # it held, for what it granted
    short = await api.ok("GET", work_path(agent), headers=agent.headers)
    assert short == {"count": 0, "jobs": [], "wait_seconds": 0}
    for bad in ("-1", "3601", "soon"):
        response = await api.call(
            "GET", work_path(agent), headers=agent.headers, query={"wait": bad}
        )
        await assert_error(response, 400)


async def test_the_poll_carries_the_heartbeat_facts(api: Api, autojump_clock: Any) -> None:
    agent = await api.register_agent()
    facts = {"Certctl-Hostname": "moved.example.com", "Certctl-Version": "2.0.0%2Brc1"}
    await api.ok("GET", work_path(agent), headers=agent.headers | facts, query={"wait": "5"})
    services = api.state.services
    assert await services.sightings.flush(services.store) in (0, 1)  # the loop may be first
    stored = await api.ok("GET", f"/api/v1/agents/{agent.id}")
    assert (stored["hostname"], stored["version"]) == ("moved.example.com", "2.0.0+rc1")
    assert stored["status"] == "Online"

    for header, value in (("Certctl-Os", "linux%0Aevil"), ("Certctl-Version", "%FF")):
        response = await api.call(
            "GET",
            work_path(agent),
            headers=agent.headers | {header: value},
            query={"wait": "5"},
        )
        body = await assert_error(response, 400)
        assert header in body["message"]


async def test_beyond_the_cap_a_poll_is_answered_at_once(api: Api, autojump_clock: Any) -> None:
    fleet = [await api.register_agent() for _ in range(3)]
    async with trio.open_nursery() as nursery:
        polls = [await held(api, nursery, a) for a in fleet[:2]]
        started = trio.current_time()
        third = await api.ok(
            "GET", work_path(fleet[2]), headers=fleet[2].headers, query={"wait": "40"}
        )
        assert third["wait_seconds"] == 0  # the agent short-polls until a slot frees
        assert trio.current_time() - started < 1
    assert [p.body["wait_seconds"] for p in polls] == [40, 40]


async def test_stopping_answers_every_held_poll_and_holds_no_new_one(
    api: Api, autojump_clock: Any
) -> None:
    agent = await api.register_agent()
    async with trio.open_nursery() as nursery:
        poll = await held(api, nursery, agent)
        started = trio.current_time()
        stopping(api.app)
        await trio.testing.wait_all_tasks_blocked()
        assert poll.body == {"count": 0, "jobs": [], "wait_seconds": 40}
        assert trio.current_time() - started < 1
    again = await api.ok("GET", work_path(agent), headers=agent.headers, query={"wait": "40"})
    assert again["wait_seconds"] == 0


async def test_polls_without_work_and_heartbeats_are_liveness_not_audit(
    api: Api, autojump_clock: Any
) -> None:
    before = polls()
    agent = await api.register_agent()
    target = await api.create_target(agent.id)
    await api.ok("POST", f"/api/v1/agents/{agent.id}/heartbeat", headers=agent.headers, json={})
    await api.ok("GET", work_path(agent), headers=agent.headers, query={"wait": "5"})
    await api.ok("GET", work_path(agent), headers=agent.headers)
    await api.create_certificate([target])
    claimed = await api.ok("GET", work_path(agent), headers=agent.headers, query={"wait": "5"})
    assert claimed["count"] == 1
    await api.flush_audit()
    events = (await api.ok("GET", "/api/v1/audit", query={"limit": "500"}))["items"]
    mine = f"/api/v1/agents/{agent.id}/"
    agent_calls = [e for e in events if (e["resource_id"] or "").startswith(mine)]
    assert [(e["action"], e["resource_id"]) for e in agent_calls] == [
        ("api_get", work_path(agent))
    ], agent_calls  # only the poll that handed out work
    after = polls()
    assert {k: after[k] - before[k] for k in after} == {
        ("long", "empty"): 1,
        ("short", "empty"): 1,
        ("long", "work"): 1,
        ("short", "work"): 0,
        "heartbeats": 1,
    }
    exposed = await (await api.call("GET", "/metrics")).get_data(as_text=True)
    assert "certctl_agent_polls_total{" in exposed


def polls() -> dict[object, float]:
    """The poll and heartbeat counters (process-wide, so compared before and after)."""
    counts: dict[object, float] = {
        (mode, result): REGISTRY.get_sample_value(
            "certctl_agent_polls_total", {"mode": mode, "result": result}
        )
        or 0.0
        for mode in ("long", "short")
        for result in ("empty", "work")
    }
    counts["heartbeats"] = REGISTRY.get_sample_value("certctl_agent_heartbeats_total") or 0.0
    return counts
