"""``certctl server``: configuration, TLS, store, application and listener, composed.

The order is the point: every refusal that needs no database (configuration, TLS
material, the listening address) happens before the store is opened, so a broken
deployment fails in milliseconds with one line instead of after migrations.
"""

from __future__ import annotations

import functools
import gc
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from certctl.config import ConfigError, Role, Settings, validate
from certctl.core.clock import SystemClock
from certctl.logging import configure
from certctl.server.listener import BindError, run_workers, serve, watch_sighup
from certctl.server.tls import ReloadableTLS, TLSPreflightError, preflight
from certctl.services.rules import DOMAIN_RULES
from certctl.store.connect import WATCH_EVERY, Database, open_database
from certctl.store.errors import DataDirUnusable, StoreError

if TYPE_CHECKING:
    from certctl.server.supervisor import Supervisor
    from certctl.services.context import Services

# As in certctl.cli: 1 the server could not run, 2 the configuration was refused. The
# design asks for 1 on unusable TLS material, like any other start-up failure.
EXIT_FAILED = 1
EXIT_CONFIG = 2


def run_server(settings: Settings) -> int:
    """Run the control plane until SIGTERM or SIGINT; the process exit status."""
    clock = SystemClock()
    try:
        validate(settings, role=Role.SERVER, now=clock.now())
    except ConfigError as exc:
        return _refuse(exc, EXIT_CONFIG)
    try:
        preflight(
            settings.server_tls_cert_path,
            settings.server_tls_key_path,
            settings.server_host,
            clock.now(),
        )
        return run_workers(settings, functools.partial(_worker, settings))
    except (TLSPreflightError, BindError) as exc:
        return _refuse(exc, EXIT_FAILED)


def _refuse(exc: Exception, status: int) -> int:
    print(f"certctl: {exc}", file=sys.stderr)
    return status


def _worker(settings: Settings, sockets: list[socket.socket]) -> None:
    """One worker, in this process or a spawned one (which must configure logging again)."""
    configure(settings.log_level, settings.log_format)
    try:
        trio.run(_serve, settings, sockets)
    except (TLSPreflightError, StoreError) as exc:
        # The files may have changed since the parent's preflight; the store may be down,
        # or its data directory unusable, which certctl.cli counts as configuration.
        status = EXIT_CONFIG if isinstance(exc, DataDirUnusable) else EXIT_FAILED
        raise SystemExit(_refuse(exc, status)) from None


async def _serve(settings: Settings, sockets: list[socket.socket]) -> None:
    # Imported only now that logging is configured: modules of the API layer bind their
    # loggers at import, and a logger bound earlier ignores CERTCTL_LOG_FORMAT and _LEVEL.
    from certctl.server.app import create_app, stopping  # noqa: PLC0415

    clock = SystemClock()
    tls = ReloadableTLS(
        settings.server_tls_cert_path,
        settings.server_tls_key_path,
        settings.server_host,
        clock.now(),
    )
    # Installed before the store opens, so a stop request during start-up is kept and
    # ends the server gracefully as soon as it serves.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as stop_requests:

        async def stop_requested() -> None:
            async for _ in stop_requests:
                stopping(app)
                return

        async with (
            open_database(settings, DOMAIN_RULES) as database,
            trio.open_nursery() as nursery,
        ):
            background = {"scheduler": _scheduler(settings)}
            if database.embedded is not None:
                background["embedded_postgres"] = _watchdog(database)
            app = create_app(settings, database.store, clock=clock, background=background)
            await nursery.start(watch_sighup, tls, clock)
            # Everything allocated so far (modules, app, pool) lives as long as the
            # process: moved out of the collector's reach, full collections stay short.
            gc.collect()
            gc.freeze()
            await serve(app, settings, tls, shutdown_trigger=stop_requested, sockets=sockets)
            nursery.cancel_scope.cancel()


def _watchdog(database: Database) -> Callable[[Services, Supervisor], Awaitable[None]]:
    """The embedded PostgreSQL's watchdog, as a supervised loop (``Database.watch``)."""

    async def run(services: Services, supervisor: Supervisor) -> None:
        await supervisor.loop("embedded_postgres", database.watch, every=WATCH_EVERY)

    return run


def _scheduler(settings: Settings) -> Callable[[Services, Supervisor], Awaitable[None]]:
    """The scheduler loops, run in the app's nursery (see ``certctl.server.scheduler``)."""
    from certctl.server.scheduler import Intervals, Scheduler  # noqa: PLC0415 (as create_app)

    intervals = Intervals.from_settings(settings)

    async def run(services: Services, supervisor: Supervisor) -> None:
        await Scheduler(services, intervals, supervisor=supervisor).run()

    return run
