"""Abuse limits of a real ``certctl server`` over HTTPS: a client guessing keys is
throttled and audited in aggregate, slow and silent connections are closed at the
configured timeouts, and the protocol-level refusals still carry the JSON error body."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_store import Cluster

from certctl.testing.server import ServerProcess, control_plane

READ_TIMEOUT = 2
IDLE_TIMEOUT = 10


@pytest.fixture(scope="module")
def server(
    pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
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


def test_300_wrong_keys_from_one_address_are_throttled_and_audited_in_aggregate(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    """A server of its own, so that stopping it (which writes the open failure windows
    to the audit) can be waited on, instead of the minute a window stays open."""
    database = pg_cluster.create_database()
    try:
        with control_plane(tmp_path, database_url=pg_cluster.dsn(database)) as server:
            with server.client(key="wrong-key-0123456789abcdef") as guesser:
                statuses = [guesser.get("/api/v1/certificates").status_code for _ in range(300)]
            with server.client() as api:  # a good key from the same address is served
                assert api.get("/api/v1/certificates").status_code == 200
        (rows,) = pg_cluster.run(
            database, "SELECT action, actor, details::text AS details FROM audit_events"
        )
    finally:
        pg_cluster.drop_database(database)
    assert statuses[0] == 401
    assert set(statuses) == {401, 429}
    assert statuses.count(429) >= 250, statuses.count(401)
    aggregated = [json.loads(r["details"]) for r in rows if r["action"] == "auth_failed"]
    assert 1 <= len(aggregated) <= 3, aggregated
    assert sum(d["failures"] + d["throttled"] for d in aggregated) == 300
    assert not [r for r in rows if r["action"] == "api_get" and r["actor"] == "anonymous"]


def test_405_carries_allow_and_the_json_body(server: ServerProcess) -> None:
    with server.client() as api:
        response = api.request("PATCH", "/api/v1/certificates")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}
    assert response.json()["error"] == "method_not_allowed"


def tls_socket(server: ServerProcess) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    return server.ssl_context().wrap_socket(raw, server_hostname="localhost")


def closed_after(connection: ssl.SSLSocket, started: float) -> float:
    """Seconds from ``started`` until the server closed ``connection`` (reads until EOF)."""
    try:
        while connection.recv(65536):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    return time.monotonic() - started


def test_a_connection_with_half_a_request_head_is_closed_at_the_read_timeout(
    server: ServerProcess,
) -> None:
    with tls_socket(server) as connection:
        started = time.monotonic()
        connection.sendall(b"GET /api/v1/certificates HTTP/1.1\r\nHost: localhost\r\n")
        waited = closed_after(connection, started)
    # hypercorn alone kept it until the idle timeout (10 s) counted from the connect.
    assert waited < IDLE_TIMEOUT - 2, waited


def read_response(connection: ssl.SSLSocket) -> bytes:
    """One whole HTTP/1.1 response (head and its Content-Length of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def test_an_idle_keep_alive_connection_lives_until_the_idle_timeout(
    server: ServerProcess,
) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with tls_socket(server) as connection:
        connection.sendall(request)
        answer = read_response(connection)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        time.sleep(READ_TIMEOUT + 2)  # past the read timeout, which must not apply here
        connection.sendall(request)
        assert read_response(connection).startswith(b"HTTP/1.1 200")
        idle_since = time.monotonic()
        waited = closed_after(connection, idle_since)
    assert waited >= IDLE_TIMEOUT - 1, waited


def test_an_oversized_request_head_gets_431_with_the_json_body(server: ServerProcess) -> None:
    with tls_socket(server) as connection:
        # Just past hypercorn's 16 KiB limit, in small writes, and then nothing more: the
        # server has read every byte when it answers and closes, so no reset can swallow
        # the answer (a 70 KB write would race the close).
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        for _ in range(17):
            connection.sendall(b"a" * 1024)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), head
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)
    assert error["error"] == "request_header_fields_too_large"
    assert set(error) == {"error", "message", "request_id"}
