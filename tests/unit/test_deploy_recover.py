"""The pure recovery rule: what to do given the journal and what is on disk."""

from __future__ import annotations

import pytest

from certctl.deploy.journal import Entry, Journal, Snapshot, decode, encode
from certctl.deploy.recover import Action, Observation, decide

OLD = Snapshot("a" * 64, 0o640, 10, 20)
NEW_SHA = "b" * 64
NEW = Snapshot(NEW_SHA, 0o600, 0, 0)


def journal(old: Snapshot | None, committed: bool = False) -> Journal:
    entry = Entry(
        "/t/cert.pem", "/t/cert.pem.certctl-tmp.1", None if old is None else "/t/bak", NEW_SHA, old
    )
    return Journal("0" * 19, "/state", "nginx", 3, ("reload",), 5.0, (entry,), committed)


@pytest.mark.parametrize(
    ("old", "live", "backup", "action"),
    [
        (OLD, OLD, OLD.sha256, Action.KEEP),  # crash before the rename
        (OLD, NEW, OLD.sha256, Action.RESTORE),  # crash after the rename
        (
            OLD,
            Snapshot(OLD.sha256, 0o600, 0, 0),
            OLD.sha256,
            Action.RESTORE,
        ),  # same bytes, new owner
        (None, None, None, Action.KEEP),  # new file, never renamed
        (None, NEW, None, Action.REMOVE),  # new file, renamed: only such a file is removed
    ],
)
def test_an_uncommitted_journal_rolls_back(
    old: Snapshot | None, live: Snapshot | None, backup: str | None, action: Action
) -> None:
    decision = decide(journal(old), {"/t/cert.pem": Observation(live, backup)})
    assert not decision.forward
    assert decision.actions == {"/t/cert.pem": action}
    assert decision.conflicts == ()


@pytest.mark.parametrize(
    ("old", "live", "backup", "conflict"),
    [
        (OLD, Snapshot("c" * 64, 0o600, 0, 0), OLD.sha256, "neither the old nor the new"),
        (OLD, None, OLD.sha256, "neither the old nor the new"),
        (OLD, NEW, None, "missing or does not hold the old bytes"),
        (OLD, NEW, "d" * 64, "missing or does not hold the old bytes"),
        (None, Snapshot("c" * 64, 0o600, 0, 0), None, "created by this deploy but holds other"),
    ],
)
def test_anything_else_is_a_conflict_for_a_human(
    old: Snapshot | None, live: Snapshot | None, backup: str | None, conflict: str
) -> None:
    decision = decide(journal(old), {"/t/cert.pem": Observation(live, backup)})
    (message,) = decision.conflicts
    assert conflict in message


def test_a_committed_journal_rolls_forward_without_looking() -> None:
    decision = decide(journal(OLD, committed=True), {})
    assert decision.forward
    assert decision.actions == {"/t/cert.pem": Action.KEEP}


def test_the_journal_round_trips_through_its_file_name() -> None:
    for committed in (False, True):
        original = journal(OLD, committed)
        assert decode(encode(original), original.path) == original
