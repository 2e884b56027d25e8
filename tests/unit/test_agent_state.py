"""The agent's files: its identity and its private keys, private and written atomically."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from certctl.agent import files
from certctl.agent.keystore import DEPLOYED_FILE, KEEP, KeyStore, KeyStoreError, spki_sha256
from certctl.agent.state import (
    StateUnusable,
    StoredIdentity,
    load_identity,
    open_state_dir,
    save_identity,
)
from certctl.deploy import OsFileSystem
from certctl.pki.keys import ECDSA_P256, ED25519, SigningKey, generate_key, private_key_pem
from certctl.protocol import AgentIdentity

URL = "https://cp.example.test:8443"
IDENTITY = AgentIdentity(agent_id="agent-1", agent_key="secret-agent-key")
RECORD = json.dumps({"agent_id": "agent-1", "server_url": URL})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def same_key(a: SigningKey | None, b: SigningKey) -> bool:
    return a is not None and private_key_pem(a) == private_key_pem(b)


# -- identity ------------------------------------------------------------------------------


def test_identity_round_trips_in_private_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert load_identity(state, URL) is None
    save_identity(state, StoredIdentity(IDENTITY, URL))

    assert load_identity(state, URL) == IDENTITY
    assert mode(state) == 0o700
    assert mode(state / "agent.json") == 0o600
    assert mode(state / "agent.key") == 0o600
    record = json.loads((state / "agent.json").read_text())
    assert record == {"agent_id": "agent-1", "server_url": URL}
    assert sorted(p.name for p in state.iterdir()) == ["agent.json", "agent.key"]


def test_a_loose_state_dir_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    open_state_dir(state)
    assert mode(state) == 0o700


def test_an_identity_for_another_server_is_refused(tmp_path: Path) -> None:
    save_identity(tmp_path, StoredIdentity(IDENTITY, URL))
    with pytest.raises(StateUnusable, match=f"registered with {URL}") as refused:
        load_identity(tmp_path, "https://elsewhere.example.test")
    assert "agent.json and agent.key away" in str(refused.value)
    assert refused.value.variable == "CERTCTL_AGENT_STATE_DIR"


@pytest.mark.parametrize(
    ("record", "key", "message"),
    [
        ("{not json", "k", "is damaged"),
        ('{"agent_id": "agent-1"}', "k", "is damaged"),
        (RECORD, None, "agent.key is missing"),
        (RECORD, "", "is empty"),
    ],
)
def test_damaged_state_says_how_to_start_over(
    tmp_path: Path, record: str, key: str | None, message: str
) -> None:
    (tmp_path / "agent.json").write_text(record)
    if key is not None:
        (tmp_path / "agent.key").write_text(key)
    with pytest.raises(StateUnusable, match=message) as refused:
        load_identity(tmp_path, URL)
    assert "register" in str(refused.value)


def test_a_failed_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "agent.key"
    files.write_private(target, b"old")

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device", src)

    monkeypatch.setattr(OsFileSystem, "rename", lambda _self, src, dst: crash(src, dst))
    with pytest.raises(OSError, match="No space left"):
        files.write_private(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["agent.key"]


def test_writes_replace_whole_files_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"a much longer previous content")
    target.chmod(0o644)
    files.write_private(target, b"short")
    assert target.read_bytes() == b"short"
    assert mode(target) == 0o600


# -- private keys ----------------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys")


def test_keys_are_stored_by_public_key_in_private_files(keys: KeyStore) -> None:
    key = generate_key(ECDSA_P256)
    path = keys.store("cert-1", key)

    assert path == keys.root / "cert-1" / f"{spki_sha256(key.public_key())}.pem"
    assert mode(path) == 0o600
    assert mode(keys.root) == 0o700
    assert mode(keys.root / "cert-1") == 0o700
    assert same_key(keys.find("cert-1", key.public_key()), key)


def test_a_key_is_found_by_its_certificate_and_public_key_only(keys: KeyStore) -> None:
    key, other = generate_key(ECDSA_P256), generate_key(ED25519)
    keys.store("cert-1", key)
    keys.store("cert-1", other)
    assert same_key(keys.find("cert-1", key.public_key()), key)
    assert same_key(keys.find("cert-1", other.public_key()), other)
    assert keys.find("cert-2", key.public_key()) is None
    assert keys.find("cert-1", generate_key(ECDSA_P256).public_key()) is None


@pytest.mark.parametrize("certificate_id", ["../etc", "a/b", "..", ".hidden", "", "x" * 200])
def test_certificate_ids_cannot_leave_the_key_directory(
    keys: KeyStore, certificate_id: str
) -> None:
    with pytest.raises(KeyStoreError, match="cannot name a key directory"):
        keys.store(certificate_id, generate_key(ECDSA_P256))


def test_a_key_file_replaced_outside_the_agent_is_refused(keys: KeyStore) -> None:
    key = generate_key(ECDSA_P256)
    path = keys.store("cert-1", key)
    path.write_bytes(private_key_pem(generate_key(ECDSA_P256)))
    with pytest.raises(KeyStoreError, match="does not match its file name"):
        keys.find("cert-1", key.public_key())
    path.write_text("garbage")
    with pytest.raises(KeyStoreError, match="is damaged"):
        keys.find("cert-1", key.public_key())


def test_without_a_deployed_key_the_newest_are_kept(keys: KeyStore) -> None:
    made = [generate_key(ECDSA_P256) for _ in range(KEEP + 2)]
    for key in made:
        keys.store("cert-1", key)
    assert [keys.find("cert-1", k.public_key()) is not None for k in made] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_pruning_keeps_the_deployed_key_and_newer_ones(keys: KeyStore) -> None:
    old, deployed, *renewals = [generate_key(ECDSA_P256) for _ in range(6)]
    keys.store("cert-1", old)
    keys.store("cert-1", deployed)
    removed = keys.mark_deployed("cert-1", deployed.public_key())
    assert removed == [keys.root / "cert-1" / f"{spki_sha256(old.public_key())}.pem"]

    for key in renewals:  # renewals that failed after making their key
        keys.store("cert-1", key)

    present = {
        name: keys.find("cert-1", k.public_key()) is not None
        for name, k in [("deployed", deployed), *((f"r{i}", k) for i, k in enumerate(renewals))]
    }
    assert present == {"deployed": True, "r0": False, "r1": False, "r2": True, "r3": True}
    assert (keys.root / "cert-1" / DEPLOYED_FILE).read_text() == spki_sha256(deployed.public_key())

    keys.mark_deployed("cert-1", renewals[-1].public_key())
    assert [p.stem for p in (keys.root / "cert-1").glob("*.pem")] == [
        spki_sha256(renewals[-1].public_key())
    ]


def test_order_holds_within_one_clock_tick(keys: KeyStore) -> None:
    """Stores faster than the filesystem's timestamp granularity still age in order."""
    made = [generate_key(ECDSA_P256) for _ in range(4)]
    paths = [keys.store("cert-1", key) for key in made[:3]]
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert stamps == sorted(set(stamps))
    for path in paths:
        os.utime(path, ns=(stamps[-1], stamps[-1]))  # as if written in the same tick
    newest = keys.store("cert-1", made[3])
    assert newest.stat().st_mtime_ns > stamps[-1]
    assert keys.find("cert-1", made[3].public_key()) is not None
