"""Abuse limits of a real ``certctl server`` over HTTPS: a client guessing keys is
throttled and audited in aggregate, slow and silent connections are closed at the
configured timeouts, and the protocol-level refusals still carry the JSON error body."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest_store import Cluster

from certctl.testing.server import ControlPlane, control_plane

READ_TIMEOUT = 2
IDLE_TIMEOUT = 3


@pytest.fixture(scope="module")
def server(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    name = pg_cluster.create_database()
    extra = {
        "CERTCTL_SERVER_READ_TIMEOUT": f"{READ_TIMEOUT}s",
        "CERTCTL_SERVER_IDLE_TIMEOUT": f"{IDLE_TIMEOUT}s",
    }
    try:
        with control_plane(
            tmp_path_factory.mktemp("abuse"), database_url=pg_cluster.dsn(name), extra_env=extra
        ) as running:
            yield running
    finally:
        pg_cluster.drop_database(name)


def audit(server: ControlPlane, **query: str) -> list[dict[str, object]]:
    with server.client() as api:
        items: list[dict[str, object]] = api.get(
            "/api/v1/audit", params={"limit": "1000", **query}
        ).json()["items"]
    return items


def test_300_wrong_keys_from_one_address_are_throttled_and_audited_in_aggregate(
    server: ControlPlane,
) -> None:
    with server.client(key="wrong-key-0123456789abcdef") as guesser:
        statuses = [guesser.get("/api/v1/certificates").status_code for _ in range(300)]
    assert statuses[0] == 401
    assert set(statuses) == {401, 429}
    assert statuses.count(429) >= 250, statuses.count(401)
    with server.client() as api:  # a good key from the same address is still served
        assert api.get("/api/v1/certificates").status_code == 200

    def aggregated() -> list[dict[str, object]]:
        return audit(server, action="auth_failed")

    deadline = time.monotonic() + 120  # windows close after a minute, then are written
    while not aggregated():
        assert time.monotonic() < deadline, "no auth_failed audit row appeared"
        time.sleep(1)
    rows = aggregated()
    assert 1 <= len(rows) <= 3, rows
    counted = sum(int(r["details"]["failures"]) + int(r["details"]["throttled"]) for r in rows)  # type: ignore[index]
    assert counted == 300
    assert not [r for r in audit(server, actor="anonymous") if r["action"] == "api_get"]


def test_405_carries_allow_and_the_json_body(server: ControlPlane) -> None:
    with server.client() as api:
        response = api.request("PATCH", "/api/v1/certificates")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}
    assert response.json()["error"] == "method_not_allowed"
