"""Deterministic core: pure decisions over plain data.

Nothing here performs I/O, reads the wall clock or draws global randomness; time and
randomness arrive as parameters so the server, the agent and the fleet simulator reach
identical decisions from identical inputs. Only the standard library is imported.
"""
