"""Reload an HAProxy master-worker through its master CLI and wait until it finished.

HAProxy 2.6 reloads asynchronously on ``SIGUSR2`` (or the CLI's ``reload``) and coalesces
a second signal that arrives mid-reload, so a reload right after another one (a deploy,
then its rollback) can be silently lost. systemd's ``reload`` waits for the service's
readiness notification; this script is the sidecar's equivalent: ``python -I -S
haproxy_reload.py MASTER_SOCKET`` exits 0 once the master reports one more reload and
runs a fresh worker, 1 if the new configuration failed to load. Standard library only.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import time

TIMEOUT = 30.0
_MASTER = re.compile(rb"^\d+\s+master\s+(\d+)\s+\[failed: (\d+)\]", re.MULTILINE)
_FRESH_WORKER = re.compile(rb"^\d+\s+worker\s+0\s", re.MULTILINE)


def ask(path: str, command: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as cli:
        cli.settimeout(5.0)
        cli.connect(path)
        cli.sendall(command + b"\n")
        cli.shutdown(socket.SHUT_WR)  # the master CLI answers, then sees the end and closes
        chunks = []
        while chunk := cli.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def state(path: str) -> tuple[int, int, bool] | None:
    """(reloads, failed reloads, a fresh worker runs), or None while the master re-execs."""
    try:
        reply = ask(path, b"show proc")
    except OSError:
        return None
    master = _MASTER.search(reply)
    if master is None:
        return None
    return int(master.group(1)), int(master.group(2)), bool(_FRESH_WORKER.search(reply))


def main(path: str) -> int:
    before = state(path)
    if before is None:
        print(f"haproxy master CLI at {path} does not answer", file=sys.stderr)
        return 1
    with contextlib.suppress(OSError):  # the master drops the CLI as it re-executes itself
        ask(path, b"reload")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        now = state(path)
        if now is not None and now[1] > before[1]:
            print("haproxy could not load the new configuration", file=sys.stderr)
            return 1
        if now is not None and now[0] > before[0] and now[2]:
            return 0
        time.sleep(0.02)
    print(f"haproxy did not finish reloading within {TIMEOUT:g} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
