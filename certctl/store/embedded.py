"""The embedded PostgreSQL of the zero-config default (``CERTCTL_DATABASE_URL`` unset).

The server binaries come from the ``pgserver`` wheel, so a first run needs no system
PostgreSQL. The cluster lives in ``$CERTCTL_DATA_DIR/postgres`` and listens only on a unix
socket in that directory (no TCP port to collide with or expose). pgserver stops it when
the last process using it exits; ``stop`` does so earlier for an orderly shutdown. Run as
root, pgserver runs PostgreSQL as a ``pgserver`` system user (PostgreSQL refuses root) and
makes the data dir's parents traversable for it.

Calls block (``initdb``, ``pg_ctl``): trio callers use ``trio.to_thread``.
"""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from pathlib import Path

from certctl.store.errors import DataDirUnusable

with warnings.catch_warnings():
    # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset and falls back
    # to /tmp/runtime-<uid>, which is where pgserver then keeps only its lock file: fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set", category=UserWarning)
    from pgserver.postgres_server import PostgresServer, get_server

SUBDIR = "postgres"


def _usable(data_dir: Path) -> Path:
    """``data_dir/postgres``, after making sure the data dir can hold it."""
    fix = "point CERTCTL_DATA_DIR at a writable directory, or set CERTCTL_DATABASE_URL"
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirUnusable(f"CERTCTL_DATA_DIR {data_dir} is not a directory; {fix}.")
    pgdata = data_dir / SUBDIR
    if pgdata.exists() and not pgdata.is_dir():
        raise DataDirUnusable(f"{pgdata} is not a directory; remove it or {fix}.")
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise DataDirUnusable(
            f"CERTCTL_DATA_DIR {data_dir} is not usable ({exc.strerror}); {fix}."
        ) from None
    return pgdata


class EmbeddedPostgres:
    """A running embedded cluster; ``dsn`` reaches it over its unix socket."""

    def __init__(self, server: PostgresServer) -> None:
        self._server = server

    @classmethod
    def start(cls, data_dir: Path) -> EmbeddedPostgres:
        """Start (initialising on first use) the cluster in ``data_dir/postgres``, or join
        the one another certctl process already runs there."""
        pgdata = _usable(data_dir)
        try:
            return cls(get_server(pgdata, cleanup_mode="stop"))
        except (OSError, subprocess.SubprocessError) as exc:
            raise DataDirUnusable(
                f"the embedded PostgreSQL did not start in {pgdata} ({exc}); read {pgdata}/log "
                "for the cause, or set CERTCTL_DATABASE_URL to use another PostgreSQL."
            ) from None

    def dsn(self, database: str = "postgres") -> str:
        """A connection URL for ``database`` on this cluster, over its unix socket."""
        return self._server.get_uri(database)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid."""
        return self._server.get_pid()

    def ensure_running(self) -> None:
        """Start the cluster again if its postmaster is gone (after a crash or a kill)."""
        self._server.ensure_postgres_running()

    def stop(self) -> None:
        self._server.cleanup()
