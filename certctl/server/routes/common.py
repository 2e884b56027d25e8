"""Helpers every route module shares: the caller, JSON replies, and list pages."""

from __future__ import annotations

from typing import Any

from quart import g, jsonify
from quart.wrappers import Response

from certctl.core.model import Agent
from certctl.server.encode import plain
from certctl.services.context import Actor
from certctl.store.base import Page


def actor() -> Actor:
    found: Actor = g.actor
    return found


def calling_agent() -> Agent:
    found: Agent = g.agent
    return found


def reply(value: Any, status: int = 200) -> tuple[Response, int]:
    return jsonify(plain(value)), status


def page(items: Page[Any]) -> tuple[Response, int]:
    return reply({"items": items.items, "next_cursor": items.next_cursor})
