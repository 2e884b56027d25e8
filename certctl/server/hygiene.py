"""Hostile characters are refused at the edge, before any service, store or audit sees them.

The request path, every query key and value, the header values certctl reads and every
string of a JSON body are checked here (``certctl.core.text`` says what is hostile). A NUL
that reached the audit writer once stopped every audit row and the scheduler with it; a
NUL in a path parameter gave a 500 from the database on fourteen routes. Refusing is the
fix, not escaping: no caller has a legitimate use for these characters in those places.

JSON strings get the free-text rule here (PEM bodies and reported command output hold
newlines); the schemas apply the stricter name rule field by field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from certctl.core.text import describe, hostile_in_name, hostile_in_text

CHECKED_HEADERS = ("Authorization", "Origin")
"""The request headers whose values certctl reads."""

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a request body may have."""


def request_problem(
    path: str, query: Iterable[tuple[str, str]], headers: Mapping[str, str | None]
) -> str | None:
    """One sentence naming what is hostile in the path, the query or the ``headers``
    given (those of ``CHECKED_HEADERS`` the request carries), or ``None``."""
    places = [("the request path", path)]
    for key, value in query:
        places += [("a query parameter name", key), (f"query parameter {key[:64]!r}", value)]
    places += [(f"header {name}", value) for name, value in headers.items() if value is not None]
    for where, text in places:
        char = hostile_in_name(text)
        if char is not None:
            return _refusal(where, char)
    return None


def json_problem(value: object, *, names: bool = False) -> str | None:
    """What is wrong with a parsed JSON value: too deep, or a hostile key or string.

    Strings get the free-text rule (newlines allowed) unless ``names``: the schemas apply
    that to free-form objects such as a target's config, which holds paths, commands and
    host names and so never a newline.
    """
    strings = hostile_in_name if names else hostile_in_text
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            char = strings(item)
            if char is not None:
                return _refusal("a JSON string", char)
            continue
        children: Iterable[object]
        if isinstance(item, dict):
            for key in item:
                char = hostile_in_name(key)
                if char is not None:
                    return _refusal("a JSON object key", char)
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > MAX_JSON_DEPTH:
            return f"JSON nested deeper than {MAX_JSON_DEPTH} levels; flatten the body"
        stack.extend((child, level + 1) for child in children)
    return None


def _refusal(where: str, char: str) -> str:
    return (
        f"{where} contains {describe(char)}, a control or bidi character certctl refuses; "
        "remove it and retry."
    )
