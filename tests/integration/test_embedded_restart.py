"""The embedded PostgreSQL under a real ``certctl server``: SIGKILL its postmaster while
clients write, and the server notices, starts it again by itself and loses nothing that
it acknowledged."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from certctl.store.embedded import SUBDIR, live_postmaster
from certctl.testing.server import ServerProcess, control_plane

# Bounds against a hang, counted from the kill: the server notices within seconds on a
# quiet machine, but a loaded one may take longer and that is not a failure.
NOT_READY_WITHIN = 120.0
READY_AGAIN_WITHIN = 300.0


class Writer(threading.Thread):
    """Creates teams one after the other, keeping the ids the server acknowledged."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.acknowledged: list[str] = []
        self.refused = 0
        self.unexpected: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with self.server.client() as api:
            n = 0
            while not self.halt.is_set():
                n += 1
                try:
                    response = api.post("/api/v1/teams", json={"name": f"team-{n}"})
                except httpx.TransportError:
                    self.refused += 1
                    continue
                if response.status_code == 201:
                    self.acknowledged.append(response.json()["id"])
                elif response.status_code in (429, 503):
                    self.refused += 1
                else:  # a 5xx other than 503 is a bug; the test reports it at the end
                    self.unexpected.append(f"{response.status_code} {response.text}")
                time.sleep(0.05)


def acknowledged(writer: Writer, count: int) -> None:
    """Wait until ``writer`` has ``count`` acknowledged writes. Not a timing claim: the
    bound only turns a server that never answers again into a failure, not a hang."""
    deadline = time.monotonic() + 600
    while len(writer.acknowledged) < count:
        assert writer.is_alive(), "the writer stopped"
        assert time.monotonic() < deadline, (len(writer.acknowledged), writer.unexpected[:3])
        time.sleep(0.05)


def ready(api: httpx.Client) -> int:
    try:
        return api.get("/ready").status_code
    except httpx.TransportError:
        return 0


def test_a_killed_postmaster_is_restarted_and_no_acknowledged_write_is_lost(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "server"
    with control_plane(workdir) as server, server.client(key="") as probe:
        pgdata = (workdir / "data" / SUBDIR).absolute()
        postmaster = live_postmaster(pgdata)
        assert postmaster is not None, "the server runs the embedded PostgreSQL"
        writer = Writer(server)
        writer.start()
        acknowledged(writer, 20)
        before_kill = len(writer.acknowledged)
        os.kill(postmaster[0], signal.SIGKILL)
        killed = time.monotonic()
        while ready(probe) == 200:
            assert time.monotonic() - killed < NOT_READY_WITHIN, "/ready never noticed"
            time.sleep(0.02)
        noticed = time.monotonic() - killed
        while ready(probe) != 200:
            assert time.monotonic() - killed < READY_AGAIN_WITHIN, server.log()[-3000:]
            time.sleep(0.1)
        back = time.monotonic() - killed
        after = live_postmaster(pgdata)
        assert after is not None
        assert after[0] != postmaster[0]
        resumed = len(writer.acknowledged)
        acknowledged(writer, resumed + 20)
        writer.halt.set()
        writer.join(30)
        with server.client() as api:
            stored = {t["id"] for t in api.get("/api/v1/teams").json()["items"]}
        missing = [t for t in writer.acknowledged if t not in stored]
        assert missing == [], f"{len(missing)} acknowledged writes are gone"
        assert writer.unexpected == [], "only 503 (or 429) may answer during the outage"
        print(
            f"\nnot ready {noticed:.2f} s after the SIGKILL, ready again after {back:.2f} s; "
            f"{before_kill} writes before, {len(writer.acknowledged)} in all, "
            f"{writer.refused} refused during the outage"
        )
        assert "embedded PostgreSQL started again" in server.log()
    # The server stopped the postmaster it had started again.
    assert live_postmaster(pgdata, ready=False) is None


def test_a_server_that_joined_a_running_cluster_leaves_it_running(tmp_path: Path) -> None:
    workdir = tmp_path / "server"
    with control_plane(workdir, name="first"):
        pgdata = (workdir / "data" / SUBDIR).absolute()
        started = live_postmaster(pgdata)
        assert started is not None
        second = tmp_path / "second"
        with control_plane(
            second, tls_dir=workdir / "tls", extra_env={"CERTCTL_DATA_DIR": str(workdir / "data")}
        ):
            assert live_postmaster(pgdata) == started
        assert live_postmaster(pgdata) == started, "the joiner must not stop it"
    assert live_postmaster(pgdata, ready=False) is None, "the one that started it stops it"
