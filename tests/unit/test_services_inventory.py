"""The inventory use cases: ids, the update rule and checks live in the service, so any
caller (the API, the CLI, the simulator) gets the same entities and audit events."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_services_support import OPERATOR, ServiceEnv

from certctl.core.model import TargetType
from certctl.services import inventory
from certctl.services.errors import InvalidInput
from certctl.store.base import AuditQuery


@pytest.fixture
async def env(tmp_path: Path) -> ServiceEnv:
    return await ServiceEnv.build(tmp_path)


async def test_create_generates_an_id_and_update_keeps_the_creation_time(env: ServiceEnv) -> None:
    created = await inventory.TEAMS.create(
        env.services, OPERATOR, inventory.TeamInput(name="web", description="")
    )
    assert created.id.startswith("team-")

    updated = await inventory.TEAMS.update(
        env.services, OPERATOR, created.id, inventory.TeamInput(name="web", description="d")
    )
    assert (updated.created_at, updated.description) == (created.created_at, "d")
    actions = {
        e.action for e in (await env.store.list_audit(AuditQuery(resource_id=created.id))).items
    }
    assert actions == {"team_created", "team_updated"}


async def test_an_id_in_the_body_must_match_the_path(env: ServiceEnv) -> None:
    with pytest.raises(InvalidInput, match="differs from the path"):
        await inventory.TEAMS.update(
            env.services,
            OPERATOR,
            "team-1",
            inventory.TeamInput(name="x", description="", id="other"),
        )


async def test_a_target_update_leaves_unset_fields_and_checks_the_config(env: ServiceEnv) -> None:
    web = await env.agent("web-01")
    target = await inventory.TARGETS.create(
        env.services,
        OPERATOR,
        inventory.TargetInput(
            name="files",
            type=TargetType.FILE,
            agent_id=web.agent.id,
            config={"cert_path": "/etc/ssl/a.pem", "key_path": "/etc/ssl/a.key"},
            enabled=True,
        ),
    )
    renamed = await inventory.TARGETS.update(
        env.services, OPERATOR, target.id, inventory.TargetChanges(name="renamed")
    )
    assert (renamed.name, renamed.config, renamed.enabled) == ("renamed", target.config, True)
    with pytest.raises(InvalidInput):
        await inventory.TARGETS.update(
            env.services, OPERATOR, target.id, inventory.TargetChanges(config={"cert_path": "x"})
        )
