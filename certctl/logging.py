"""Structured logs: JSON lines for machines by default, a console renderer for people.

Configured once per process from ``Settings`` so the server, the agent and the demo log
the same way; ``CERTCTL_LOG_FORMAT=console`` switches to the human renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

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
            _logger_field,
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

    It stays a lazy proxy until its first line, so a module-level logger created at import
    time still follows the ``configure`` call made later by the command that runs.
    """
    return structlog.get_logger(logger_name=name)  # type: ignore[no-any-return]


def _logger_field(
    _: object, __: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """``logger_name`` (``logger`` is a reserved argument of structlog) → ``logger``."""
    if "logger_name" in event:
        event["logger"] = event.pop("logger_name")
    return event
