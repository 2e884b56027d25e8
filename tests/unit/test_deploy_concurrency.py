"""Concurrent deploys to the same paths run one at a time, in threads and in trio tasks."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import trio

from certctl.connectors.targets.base import Material
from certctl.deploy import Command, Engine, File, FileRole, OsFileSystem, Plan, Result, Stat
from certctl.deploy.apply import VerifyStep
from certctl.testing.material import ScratchCA

ISSUER = ScratchCA()
WRITERS = [ISSUER.issue(f"writer{n}.example") for n in range(20)]
RELOAD = ("reload-service",)
CURRENT = threading.local()


class TaggedEngine(Engine):
    """Marks the worker thread with the deploy it is running, for the recorder below."""

    def apply(self, plan: Plan, verify: VerifyStep | None = None) -> Result:
        CURRENT.deploy = plan.files[0].data
        return super().apply(plan, verify)


class Recorder(OsFileSystem):
    """Real filesystem that logs which deploy made each call, in order."""

    def __init__(self) -> None:
        self.log: list[bytes] = []
        self._guard = threading.Lock()

    def _note(self) -> None:
        with self._guard:
            self.log.append(CURRENT.deploy)

    def read(self, path: str) -> bytes:
        self._note()
        return super().read(path)

    def stat(self, path: str) -> Stat | None:
        self._note()
        return super().stat(path)

    def create(self, path: str, data: bytes) -> None:
        self._note()
        super().create(path, data)

    def rename(self, src: str, dst: str) -> None:
        self._note()
        super().rename(src, dst)

    def remove(self, path: str) -> None:
        self._note()
        super().remove(path)


class InFlight:
    """Runner whose reload takes a while and counts how many run at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.calls = 0
        self._guard = threading.Lock()

    def run(self, argv: Command, timeout: float) -> str:
        with self._guard:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
        threading.Event().wait(0.002)
        with self._guard:
            self.now -= 1
        return ""


def plan(site: Path, material: Material) -> Plan:
    return Plan(
        files=(
            File(str(site / "cert.pem"), material.cert_pem, FileRole.CERT),
            File(str(site / "chain.pem"), material.chain_pem, FileRole.CHAIN),
            File(str(site / "key.pem"), material.key_pem, FileRole.KEY),
        ),
        reload=RELOAD,
    )


def contiguous(log: list[bytes]) -> bool:
    """Each deploy's calls form one block: no deploy interleaved with another."""
    finished: set[bytes] = set()
    current = None
    for ident in log:
        if ident != current:
            if ident in finished:
                return False
            if current is not None:
                finished.add(current)
            current = ident
    return True


def final_is_one_writer(site: Path) -> bool:
    live = tuple((site / n).read_bytes() for n in ("cert.pem", "chain.pem", "key.pem"))
    return any(live == (w.cert_pem, w.chain_pem, w.key_pem) for w in WRITERS)


def test_twenty_threads_are_serialized(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    fs, runner = Recorder(), InFlight()
    engine = TaggedEngine(str(tmp_path / "state"), fs=fs, runner=runner)
    threads = [threading.Thread(target=engine.apply, args=(plan(site, w),)) for w in WRITERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert runner.calls == 20
    assert runner.most == 1
    assert len(set(fs.log)) == 20
    assert contiguous(fs.log)
    assert final_is_one_writer(site)
    assert sorted(n for n in os.listdir(site) if "certctl-tmp" in n) == []


async def test_twenty_trio_tasks_are_serialized(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    fs, runner = Recorder(), InFlight()
    engine = TaggedEngine(str(tmp_path / "state"), fs=fs, runner=runner)
    async with trio.open_nursery() as nursery:
        for writer in WRITERS:
            nursery.start_soon(engine.deploy, plan(site, writer))
    assert runner.calls == 20
    assert runner.most == 1
    assert len(set(fs.log)) == 20
    assert contiguous(fs.log)
    assert final_is_one_writer(site)
