"""What the edge refuses (``certctl.core.text``), and how free text is bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certctl.core.model import KeyRole
from certctl.core.text import (
    FREE_TEXT_LIMIT,
    bound_free_text,
    describe,
    escape_hostile,
    hostile_in_name,
    hostile_in_text,
    report_text,
)

HOSTILE = [
    "\x00",
    "\x01",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9f",
    "\u202a",
    "\u202e",
    "\u2066",
    "\u2069",
    "\ud800",
    "\udfff",
]


@pytest.mark.parametrize("char", HOSTILE)
def test_controls_and_bidi_overrides_are_hostile_everywhere(char: str) -> None:
    assert hostile_in_name(f"web{char}01") == char
    assert hostile_in_text(f"line one\nline{char} two") == char


@pytest.mark.parametrize("char", ["\n", "\t", "\r"])
def test_newlines_and_tabs_are_free_text_but_not_names(char: str) -> None:
    assert hostile_in_name(f"a{char}b") == char
    assert hostile_in_text(f"a{char}b") is None


def test_ordinary_unicode_is_clean() -> None:
    for value in ("www.example.com", "Zürich", "日本語", "\u00a0nbsp", "emoji 🔒", ""):
        assert hostile_in_name(value) is None
        assert hostile_in_text(value) is None


def test_describe_names_the_code_point() -> None:
    assert describe("\x00") == "U+0000"
    assert describe("\u202e") == "U+202E"


def test_escaping_keeps_what_is_allowed() -> None:
    assert escape_hostile("a\x00b\u202ec") == "a\\u0000b\\u202ec"
    assert escape_hostile("one\ntwo") == "one\\u000atwo"
    assert escape_hostile("one\ntwo\x1b[1m", free_text=True) == "one\ntwo\\u001b[1m"


def test_short_text_is_kept_verbatim() -> None:
    text = "nginx: [emerg] unknown directive\nnginx: configuration file test failed"
    assert bound_free_text(text) == text
    assert report_text(text) == text


@pytest.mark.parametrize("size", [FREE_TEXT_LIMIT + 1, FREE_TEXT_LIMIT + 9, 10 * FREE_TEXT_LIMIT])
def test_long_text_keeps_its_head_and_tail_around_a_marker(size: int) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(size))
    cut = bound_free_text(text)
    assert len(cut) == FREE_TEXT_LIMIT
    head, marker, tail = cut.split("\n")
    dropped = size - len(head) - len(tail)
    assert marker == f"[... {dropped} characters cut by certctl ...]"
    assert text.startswith(head)
    assert text.endswith(tail)
    assert len(head) > len(tail) > 0


def test_a_limit_shorter_than_the_marker_keeps_only_the_marker() -> None:
    assert bound_free_text("y" * 100, limit=10) == "\n[... 100 characters cut by certctl ...]\n"


@given(st.text(max_size=3 * FREE_TEXT_LIMIT))
def test_reported_text_is_always_acceptable(text: str) -> None:
    sent = report_text(text)
    assert hostile_in_text(sent) is None
    assert len(sent) <= FREE_TEXT_LIMIT


def test_roles_include_the_ones_below_them() -> None:
    order = [KeyRole.VIEWER, KeyRole.OPERATOR, KeyRole.ADMIN]
    for i, role in enumerate(order):
        for j, needed in enumerate(order):
            assert role.allows(needed) is (i >= j)
