"""Background work under the supervisor: a failing step is logged, counted, retried with
backoff and shown in ``/ready``, and never stops another loop or the listener."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from conftest_store import T0
from server_fixtures import OPS, make_settings, running_app
from structlog.testing import capture_logs
from test_server_api import assert_error

from certctl.core.model import ActorType, AuditEvent, Issuer, IssuerType
from certctl.server import audit_log
from certctl.server.metrics import BACKGROUND_FAILURES
from certctl.server.supervisor import UNHEALTHY_AFTER, Supervisor
from certctl.services import revocation
from certctl.services.context import Services
from certctl.services.rules import DOMAIN_RULES
from certctl.store.errors import StoreError, StoreUnavailable
from certctl.store.memory import MemoryStore


def failures(loop: str) -> float:
    return BACKGROUND_FAILURES.labels(loop)._value.get()


async def test_a_failing_step_is_retried_and_leaves_the_others_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    supervisor = Supervisor()
    ran: dict[str, list[float]] = {"bad": [], "good": []}

    async def bad() -> None:
        ran["bad"].append(trio.current_time())
        raise RuntimeError("a bug")

    async def good() -> None:
        ran["good"].append(trio.current_time())

    before = failures("bad")
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(supervisor.loop, "bad", bad, every=10.0))
            nursery.start_soon(functools.partial(supervisor.loop, "good", good, every=10.0))
            await trio.sleep(UNHEALTHY_AFTER - 1)
            assert supervisor.unhealthy() == []
            await trio.sleep(2)
            assert supervisor.unhealthy() == ["bad"]
            nursery.cancel_scope.cancel()
    assert ran["good"] == [0, 10, 20, 30, 40, 50, 60]
    # 1 s, 2 s, 4 s, 8 s, then the loop's own 10 s interval caps the backoff.
    assert ran["bad"][:6] == [0, 1, 3, 7, 15, 25]
    assert failures("bad") - before == len(ran["bad"])
    errors = [e for e in logs if e["event"] == "background step failed"]
    assert len(errors) == len(ran["bad"])
    assert all(e["loop"] == "bad" and "exc_info" in e for e in errors)
    assert supervisor.health("bad") is None, "a stopped loop takes its health entry along"


async def test_a_step_that_recovers_is_healthy_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    supervisor = Supervisor(unhealthy_after=5)
    outage = {"until": 20.0}

    async def flaky() -> None:
        if trio.current_time() < outage["until"]:
            raise StoreUnavailable("PostgreSQL is down.")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(supervisor.loop, "flaky", flaky, every=30.0))
        await trio.sleep(10)
        assert supervisor.unhealthy() == ["flaky"]
        await trio.sleep(30)
        assert supervisor.unhealthy() == []
        health = supervisor.health("flaky")
        assert health is not None
        assert health.failures == 0
        nursery.cancel_scope.cancel()


async def test_a_crashing_long_task_is_started_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    supervisor = Supervisor()
    starts: list[float] = []

    async def task() -> None:
        starts.append(trio.current_time())
        if len(starts) < 3:
            raise RuntimeError("crashed")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.keep_running, "task", task)
        await trio.sleep(2)
        assert supervisor.health("task") is not None
        assert supervisor.health("task").failing_since is not None  # type: ignore[union-attr]
        await trio.sleep(120)
        assert starts == [0, 1, 3]
        assert supervisor.health("task").failing_since is None  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()


class BrokenAudit(MemoryStore):
    """A store whose audit table refuses every write (a full disk, a revoked grant)."""

    async def append_audit(self, events: object) -> None:
        raise StoreError("permission denied for table audit_events")


async def test_ready_names_a_loop_failing_past_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "FLUSH_EVERY", 0.01)
    settings = make_settings(tmp_path, CERTCTL_RATE_LIMIT_ENABLED="false")
    supervisor = Supervisor(unhealthy_after=0.2)
    async with running_app(settings, BrokenAudit(DOMAIN_RULES), supervisor=supervisor) as api:
        await api.call("GET", "/api/v1/certificates")  # one event to flush
        while "audit_flush" not in supervisor.unhealthy():
            await trio.sleep(0.02)
        error = await assert_error(await api.call("GET", "/ready", headers={}), 503, "not_ready")
        assert "audit_flush" in error["message"]
        # The listener goes on: requests are still answered.
        assert (await api.call("GET", "/health", headers={})).status_code == 200
        assert api.state.audit.pending >= 1, "unwritten events are kept, not dropped"


async def test_a_full_audit_buffer_refuses_new_work_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "MAX_PENDING", 3)
    settings = make_settings(tmp_path, CERTCTL_RATE_LIMIT_ENABLED="false")
    async with running_app(settings, BrokenAudit(DOMAIN_RULES)) as api:
        for _ in range(3):
            await api.call("GET", "/api/v1/certificates")
        refused = await api.call(
            "POST", "/api/v1/teams", headers=OPS, json={"name": "would-be-unaudited"}
        )
        await assert_error(refused, 503)
        assert refused.headers["Retry-After"] == "5"
        teams = await api.state.services.store.list_teams()
        assert [t.name for t in teams] == []
        assert (await api.call("GET", "/ready", headers={})).status_code == 503
        assert (await api.call("GET", "/health", headers={})).status_code == 200


async def test_one_bad_issuer_does_not_stop_the_others_crls(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_app(settings) as api:
        services: Services = api.state.services
        await services.store.create_issuer(
            Issuer("iss-broken", "broken", IssuerType.LOCAL_CA, {"leaf_validity_days": 0})
        )
        before = await revocation.crl(services, "iss-local")
        with pytest.raises(ExceptionGroup) as failed:
            await revocation.refresh_crls(services)
        assert len(failed.value.exceptions) == 1
        assert "iss-broken" in str(failed.value.exceptions[0])
        after = await revocation.crl(services, "iss-local")
        assert after.etag != before.etag, "the good issuer's CRL was re-signed anyway"


class PickyAudit(MemoryStore):
    """Refuses any batch holding an event about ``poison`` (as PostgreSQL refuses a row)."""

    async def append_audit(self, events: Sequence[AuditEvent]) -> None:
        if any("poison" in e.resource_id for e in events):
            raise StoreError("invalid byte sequence")
        await super().append_audit(events)


def audit_event(resource_id: str) -> AuditEvent:
    event_id = f"audit-{len(resource_id)}-{resource_id.isascii()}-{resource_id[1:3]}"
    return AuditEvent(
        event_id.replace("\x00", "0"), "ops", ActorType.USER, "api_get", "api", resource_id, T0, {}
    )


async def test_an_event_the_database_refuses_does_not_hold_up_the_others() -> None:
    store = PickyAudit(DOMAIN_RULES)
    buffer = audit_log.AuditBuffer(store)
    for name in ("/a", "/poison", "/b"):
        buffer.add(audit_event(name))
    with capture_logs() as logs, pytest.raises(audit_log.AuditUnwritable, match="1 audit event"):
        await buffer.flush()
    assert buffer.pending == 0
    written = await store.list_audit(limit=10)
    assert sorted(e.resource_id for e in written.items) == ["/a", "/b"]
    (logged,) = [e for e in logs if e["event"] == "audit_event_unwritable"]
    assert "/poison" in logged["audit_event"]


async def test_events_are_escaped_before_they_are_stored() -> None:
    store = MemoryStore(DOMAIN_RULES)
    buffer = audit_log.AuditBuffer(store)
    event = audit_event("/x\x00y")
    buffer.add(replace(event, details={"note": "a\u202eb", "nested": {"k\x00": ["\x85"]}}))
    await buffer.flush()
    (stored,) = (await store.list_audit(limit=10)).items
    assert stored.resource_id == "/x\\u0000y"
    assert stored.details == {"note": "a\\u202eb", "nested": {"k\\u0000": ["\\u0085"]}}
