"""Harness shared by tests, load tests and the simulator, like ``trio.testing``.

Nothing in ``certctl`` proper imports this package; it exists so that every suite injects
faults and builds fixtures the same way.
"""
