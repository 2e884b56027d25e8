"""The harness's child processes: readiness, failure reports and the clean stop.

Every suite, the demo and the benchmarks start their children through
``certctl.testing.processes``; what is checked here is what they rely on: a dead child is
reported with its log (not after the whole timeout), a stop request ends the wait, and a
child that ignores SIGTERM is killed.
"""

from __future__ import annotations

import signal
import socket
import ssl
import sys
from pathlib import Path

import pytest

from certctl.core.errors import CertctlError
from certctl.testing import processes
from certctl.testing.processes import Child, StartFailed

HANG = 600.0  # a bound against a hang only: every wait here ends on an event


def _python(tmp_path: Path, code: str) -> Child:
    argv = [sys.executable, "-c", code]
    return processes.spawn("probe-child", argv, tmp_path / "child.log", env={})


def _logged(child: Child, text: str) -> processes.Probe:
    return lambda: text in child.log()


def test_a_child_that_exits_is_reported_with_its_log_at_once(tmp_path: Path) -> None:
    child = _python(tmp_path, "print('the reason it died'); raise SystemExit(3)")
    with pytest.raises(StartFailed, match=r"probe-child exited with status 3") as caught:
        processes.wait_ready(child, lambda: False, timeout=HANG)
    assert "the reason it died" in str(caught.value)
    assert isinstance(caught.value, CertctlError)


def test_a_ready_child_is_waited_for_and_stopped_by_sigterm(tmp_path: Path) -> None:
    child = _python(tmp_path, "import time; print('up', flush=True); time.sleep(600)")
    assert processes.wait_ready(child, _logged(child, "up"), timeout=HANG)
    assert child.stop() == -signal.SIGTERM


def test_a_stop_request_ends_the_wait(tmp_path: Path) -> None:
    child = _python(tmp_path, "import time; time.sleep(600)")
    try:
        assert not processes.wait_ready(child, lambda: False, cancelled=lambda: True)
    finally:
        child.stop()


def test_a_child_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring', flush=True); time.sleep(600)"
    )
    child = _python(tmp_path, code)
    assert processes.wait_ready(child, _logged(child, "ignoring"), timeout=HANG)
    assert child.stop(timeout=0.2) == -signal.SIGKILL


def test_stop_all_signals_every_child_first(tmp_path: Path) -> None:
    children = [
        processes.spawn(name, [sys.executable, "-c", "import time; time.sleep(600)"],
                        tmp_path / f"{name}.log", env={})
        for name in ("a", "b")
    ]  # fmt: skip
    assert processes.stop_all(children) == {"a": -signal.SIGTERM, "b": -signal.SIGTERM}


def test_ports_and_the_tcp_probe() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert processes.port_in_use("127.0.0.1", port)
        assert processes.tcp_listening("127.0.0.1", port)()
    free = processes.free_port()
    assert not processes.port_in_use("127.0.0.1", free)
    assert not processes.tcp_listening("127.0.0.1", free)()


def test_the_https_probe_is_false_until_something_answers() -> None:
    context = ssl.create_default_context()
    assert not processes.https_ok(f"https://127.0.0.1:{processes.free_port()}/ready", context)()
    with pytest.raises(ValueError, match="https://"):
        processes.https_ok("http://127.0.0.1:1/ready", context)
