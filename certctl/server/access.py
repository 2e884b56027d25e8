"""Which credential a route takes, declared on the view and enforced in one place.

Routes are operator routes unless marked: ``public`` (probes, CRLs), ``bootstrap``
(agent registration), ``agent`` (the agent protocol, bound to the path's agent id) or
``admin`` (operator keys with the admin flag). An unknown path is an operator route too,
so probing for routes without a key only ever yields 401.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final, TypeVar

_F = TypeVar("_F", bound=Callable[..., object])

ATTRIBUTE: Final = "certctl_access"


class Access(enum.Enum):
    PUBLIC = "public"
    BOOTSTRAP = "bootstrap"
    AGENT = "agent"
    OPERATOR = "operator"
    ADMIN = "admin"


def _mark(access: Access) -> Callable[[_F], _F]:
    def decorate(view: _F) -> _F:
        setattr(view, ATTRIBUTE, access)
        return view

    return decorate


public = _mark(Access.PUBLIC)
bootstrap = _mark(Access.BOOTSTRAP)
agent = _mark(Access.AGENT)
admin = _mark(Access.ADMIN)


def access_of(view: object | None) -> Access:
    found = getattr(view, ATTRIBUTE, Access.OPERATOR)
    return found if isinstance(found, Access) else Access.OPERATOR
