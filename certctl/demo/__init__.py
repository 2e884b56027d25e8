"""``certctl demo``: the control plane, three agents and a realistic inventory, live.

``runner`` composes it; ``processes`` runs the ``certctl server``/``certctl agent``
children (shared with ``certctl.testing.server``); ``seed`` creates the inventory and
``live`` shows it, both only through the REST API (``api``); ``nginx`` is the private
NGINX target used when nginx is installed. See docs/quickstart.md.
"""

from __future__ import annotations

from pathlib import Path


def run_demo(*, duration: float | None, directory: Path | None, port: int) -> int:
    """Run the demo until ``duration`` seconds after the control plane is up (or until
    SIGINT/SIGTERM); the process exit status."""
    # Imported here so that ``certctl.demo.processes`` (the test harness's) loads alone.
    from certctl.demo.runner import run_demo as run  # noqa: PLC0415

    return run(duration=duration, directory=directory, port=port)
