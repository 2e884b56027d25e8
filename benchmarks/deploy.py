"""Deploy engine: a 3-file plan without hooks on the local disk, against naive writes.

The naive baseline writes the three files in place with no temp files, fsync, backups,
journal or locks: the fastest thing that could be called a deploy, and the one that tears
files on a crash. The ratio is the price of crash consistency, measured in the same run.
Versions alternate so no apply is skipped as idempotent.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable

from certctl.deploy import Engine, File, FileRole, OsFileSystem, Plan
from certctl.testing.material import ScratchCA

ROUNDS = 300
WARMUP = 20


class _NoSync(OsFileSystem):
    """Splits the engine's cost: everything it does except waiting for the disk."""

    def fsync(self, path: str) -> None:
        return None

    def fsync_dir(self, path: str) -> None:
        return None


def _latencies(step: Callable[[int], None], rounds: int) -> list[float]:
    for index in range(WARMUP):
        step(index)
    samples = []
    for index in range(rounds):
        started = time.perf_counter()
        step(index)
        samples.append(time.perf_counter() - started)
    return samples


def _report(label: str, samples: list[float]) -> float:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]
    rate = len(samples) / sum(samples)
    print(f"{label:<38} {rate:>9.0f} applies/s   p50 {p50 * 1e3:7.3f} ms   p99 {p99 * 1e3:7.3f} ms")
    return rate


def run() -> None:
    issuer = ScratchCA("bench")
    versions = [issuer.issue(f"v{n}.bench.example") for n in range(2)]
    with tempfile.TemporaryDirectory(prefix="certctl-bench-") as root:
        site = os.path.join(root, "site")
        os.mkdir(site)
        names = ("cert.pem", "chain.pem", "key.pem")
        plans = [
            Plan(
                files=(
                    File(os.path.join(site, names[0]), v.cert_pem, FileRole.CERT),
                    File(os.path.join(site, names[1]), v.chain_pem, FileRole.CHAIN),
                    File(os.path.join(site, names[2]), v.key_pem, FileRole.KEY),
                )
            )
            for v in versions
        ]
        engine = Engine(os.path.join(root, "state"))
        unsynced = Engine(os.path.join(root, "state"), fs=_NoSync())

        def apply(index: int) -> None:
            engine.apply(plans[index % 2])

        def apply_unsynced(index: int) -> None:
            unsynced.apply(plans[index % 2])

        def naive(index: int) -> None:
            for item in plans[index % 2].files:
                with open(item.path, "wb") as handle:
                    handle.write(item.data)

        print(f"3-file plan, no hooks, {ROUNDS} rounds each, directory {root}")
        engine_rate = _report("engine.apply", _latencies(apply, ROUNDS))
        bare_rate = _report("engine.apply, fsync calls skipped", _latencies(apply_unsynced, ROUNDS))
        naive_rate = _report("naive in-place write, no fsync", _latencies(naive, ROUNDS))
        print(
            f"ratio: naive is {naive_rate / engine_rate:.1f}x the engine's applies/s "
            f"({naive_rate / bare_rate:.1f}x without the fsync waits)"
        )
