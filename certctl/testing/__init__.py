"""Harness shared by tests, benchmarks, load tests and the demo, like ``trio.testing``.

- ``processes``: child processes (start, readiness probes, clean stop), free ports;
- ``server``: ``certctl server``/``certctl agent`` as children, ``control_plane(...)``;
- ``sidecars``: real NGINX, HAProxy, ... to deploy to (``servers``, ``launchers``,
  ``probes``), their config templates shipped as package data;
- ``faults``, ``material``, ``certs``, ``policy``, ``hookwrap``: fault injection and
  fixtures built the same way by every suite.

It may import the product's layers; of ``certctl`` proper only ``certctl.demo`` imports
it, and it never imports the demo, so every suite runs its processes as the demo does.
"""
