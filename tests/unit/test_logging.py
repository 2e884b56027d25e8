"""Log lines are JSON objects by default and readable text with the console renderer."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from certctl.config import LogFormat, LogLevel
from certctl.logging import configure, get_logger


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_json_lines_from_structlog_and_stdlib_loggers() -> None:
    out = io.StringIO()
    configure(LogLevel.INFO, LogFormat.JSON, stream=out)
    get_logger("certctl.test").info("deploy applied", target="nginx-1")
    logging.getLogger("hypercorn.error").warning("listening on %s", "127.0.0.1")
    get_logger("certctl.test").debug("hidden below the level")

    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "deploy applied"
    assert first["target"] == "nginx-1"
    assert first["logger"] == "certctl.test"
    assert first["level"] == "info"
    assert second["event"] == "listening on 127.0.0.1"
    assert second["logger"] == "hypercorn.error"


def test_console_renderer_is_not_json() -> None:
    out = io.StringIO()
    configure(LogLevel.DEBUG, LogFormat.CONSOLE, stream=out)
    get_logger("certctl.test").debug("renewal due", certificate="cert-1")
    line = out.getvalue().strip()
    assert "renewal due" in line
    assert "certificate=cert-1" in line
    assert not line.startswith("{")


def test_a_logger_made_before_configure_follows_it() -> None:
    """Modules make their logger at import, before the command configures logging."""
    early = get_logger("certctl.early")
    out = io.StringIO()
    configure(LogLevel.WARNING, LogFormat.JSON, stream=out)
    early.info("below the configured level")
    early.warning("kept", reason="level is warning")
    (line,) = out.getvalue().splitlines()
    assert json.loads(line) == {
        "event": "kept",
        "reason": "level is warning",
        "logger": "certctl.early",
        "level": "warning",
        "timestamp": json.loads(line)["timestamp"],
    }
