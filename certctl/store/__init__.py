"""Persistence: the ``Store`` protocol, ``PostgresStore`` (the product, in
``certctl.store.postgres``), ``MemoryStore`` (its exact in-memory model), migrations and the
embedded PostgreSQL of the zero-config default.

Importing this package does not import asyncpg: the simulator and unit tests use
``MemoryStore`` without a database driver.
"""

from certctl.store.base import Page, Store
from certctl.store.errors import Conflict, NotFound, StoreError, StoreUnavailable
from certctl.store.memory import MemoryStore

__all__ = ["Conflict", "MemoryStore", "NotFound", "Page", "Store", "StoreError", "StoreUnavailable"]
