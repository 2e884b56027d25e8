"""The root of every error family certctl raises on purpose.

It lives in ``core`` because ``core`` is the bottom layer: every room may import it, and
``core`` imports nothing of ours. Catching ``CertctlError`` separates "certctl refused, and
says why" from a bug (``ValueError``, ``KeyError``, ...), which the server shows as a 500 and
logs, never as a client error.
"""

from __future__ import annotations

__all__ = ["CertctlError"]


class CertctlError(Exception):
    """An error whose message is one sentence naming what is at fault and the fix."""
