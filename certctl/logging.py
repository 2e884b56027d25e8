"""Structured logs: JSON lines for machines by default, a console renderer for people.

Configured once per process from ``Settings`` so the server, the agent and the demo log
the same way; ``CERTCTL_LOG_FORMAT=console`` switches to the human renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import structlog

from certctl.config import LogFormat, LogLevel

_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


def configure(level: LogLevel, fmt: LogFormat, stream: TextIO = sys.stderr) -> None:
    """Route structlog (and the stdlib loggers of our dependencies) through one renderer."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # One line per HTTP request of the agent's client is noise at info; keep its warnings.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(_LEVELS[level], logging.WARNING))


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger whose lines carry ``logger=name``, matching the stdlib loggers' lines.

    It binds on every call rather than once: a module-level logger is created at import
    time, before the command that runs has called ``configure``, and binding then would
    freeze the default configuration into it.
    """
    return cast(structlog.typing.FilteringBoundLogger, _NamedLogger(name))


class _NamedLogger:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(structlog.get_logger().bind(logger=self._name), attribute)
