"""Typed PKI errors: callers catch ``PKIError`` and never a ``cryptography`` exception."""

from __future__ import annotations


class PKIError(ValueError):
    """Base class: outside input that is not usable key or certificate material."""


class PEMError(PKIError):
    """PEM text that is truncated, of the wrong block type, or does not decode."""
