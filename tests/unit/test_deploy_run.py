"""Commands run as argv without a shell; configured strings are split and checked."""

from __future__ import annotations

import time

import pytest

from certctl.deploy import CommandFailed, CommandInvalid, SubprocessRunner, parse_command


def test_a_command_runs_without_a_shell() -> None:
    out = SubprocessRunner().run(("echo", "$HOME;", "&&", "reboot"), timeout=5)
    assert out == "$HOME; && reboot\n"


def test_a_failing_command_keeps_its_output_in_the_error() -> None:
    with pytest.raises(CommandFailed, match=r"exited with status 3 \(output: out\nerr\)") as caught:
        SubprocessRunner().run(("sh", "-c", "echo out; echo err >&2; exit 3"), timeout=5)
    assert caught.value.output == "out\nerr"


def test_a_timeout_kills_the_whole_process_group() -> None:
    started = time.monotonic()
    with pytest.raises(CommandFailed, match=r"timed out after 0\.2 s"):
        # The grandchild keeps stdout open; only a group kill ends the wait on time.
        SubprocessRunner().run(("sh", "-c", "sleep 30 & sleep 30"), timeout=0.2)
    # Far below the grandchild's 30 s, which a wait on its open stdout would take.
    assert time.monotonic() - started < 25


def test_a_missing_program_is_a_command_failure() -> None:
    with pytest.raises(CommandFailed, match="could not start"):
        SubprocessRunner().run(("/nonexistent/certctl-reload",), timeout=5)


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        ("nginx -s reload", ("nginx", "-s", "reload")),
        ("/usr/sbin/apachectl  graceful", ("/usr/sbin/apachectl", "graceful")),
        ("sh -c 'nginx -t; true'", ("sh", "-c", "nginx -t; true")),
        (
            "haproxy -c -f /etc/haproxy/haproxy.cfg",
            ("haproxy", "-c", "-f", "/etc/haproxy/haproxy.cfg"),
        ),
    ],
)
def test_parse_command_splits_like_a_shell_would(text: str, argv: tuple[str, ...]) -> None:
    assert parse_command(text) == argv


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("nginx -t; systemctl reload nginx", "shell syntax ';'"),
        ("nginx -t && nginx -s reload", "shell syntax '&&'"),
        ("cat x | tee y", "shell syntax '|'"),
        ("echo x > /etc/passwd", "shell syntax '>'"),
        ("echo $(id)", "shell syntax"),
        ("echo `id`", "shell syntax"),
        ("echo $HOME", "shell syntax '\\$HOME'"),
        ("nginx\n-t", "control character"),
        ("x" * 1025, "over 1024"),
        ("echo 'unbalanced", "fix the quoting"),
    ],
)
def test_parse_command_refuses_what_only_a_shell_would_understand(text: str, message: str) -> None:
    with pytest.raises(CommandInvalid, match=message):
        parse_command(text, field="reload_command")
