"""``certctl demo``: the control plane, three agents and a realistic inventory, live.

``runner`` composes it, running the ``certctl server``/``certctl agent`` children with the
test harness's own process handling (``certctl.testing.server``, so the demo and the
tests cannot drift apart); ``seed`` creates the inventory and ``live`` shows it, both only
through the REST API (``api``); ``nginx`` is the private NGINX target used when nginx is
installed. See docs/quickstart.md.
"""

from __future__ import annotations

from certctl.demo.runner import run_demo

__all__ = ["run_demo"]
