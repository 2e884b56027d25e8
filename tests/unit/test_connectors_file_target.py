"""The generic File target: the layout it plans, its optional hooks, opt-in verification.

Modes and owners on a real disk are in ``test_connectors_files`` (its table has File).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from certctl.connectors.targets.base import Material, TargetConfigInvalid
from certctl.connectors.targets.registry import load_connector, target_type
from certctl.core.model import TargetType
from certctl.deploy import Endpoint, Engine, FileRole
from certctl.testing.material import ScratchCA

BASE = {"cert_path": "/srv/app/tls/cert.pem", "key_path": "/srv/app/tls/key.pem"}


@pytest.fixture(scope="module")
def version() -> Material:
    return ScratchCA("file target").issue("app.example.test")


def plan_of(
    version: Material, chain: bool = True, **extra: Any
) -> dict[str, tuple[FileRole, bytes]]:
    connector = load_connector("file", BASE | extra)
    chain_pem = version.chain_pem if chain else b""
    plan = connector.plan(version.cert_pem, chain_pem, version.key_pem)
    return {f.path.rsplit("/", 1)[1]: (f.role, f.data) for f in plan.files}


def test_file_is_a_registered_type() -> None:
    assert target_type("file") is TargetType.FILE
    assert target_type("File") is TargetType.FILE


def test_without_a_chain_file_the_chain_follows_the_certificate(version: Material) -> None:
    files = plan_of(version)
    assert files == {
        "cert.pem": (FileRole.FULLCHAIN, version.cert_pem + version.chain_pem),
        "key.pem": (FileRole.KEY, version.key_pem),
    }


def test_each_configured_file_gets_its_part(version: Material) -> None:
    files = plan_of(
        version, chain_path="/srv/app/tls/chain.pem", fullchain_path="/srv/app/tls/full.pem"
    )
    assert files == {
        "cert.pem": (FileRole.CERT, version.cert_pem),
        "key.pem": (FileRole.KEY, version.key_pem),
        "chain.pem": (FileRole.CHAIN, version.chain_pem),
        "full.pem": (FileRole.FULLCHAIN, version.cert_pem + version.chain_pem),
    }


def test_a_full_chain_file_alone_keeps_the_leaf_alone(version: Material) -> None:
    files = plan_of(version, fullchain_path="/srv/app/tls/full.pem")
    assert files["cert.pem"] == (FileRole.CERT, version.cert_pem)
    assert files["full.pem"] == (FileRole.FULLCHAIN, version.cert_pem + version.chain_pem)


def test_a_self_signed_leaf_writes_no_empty_chain_file(version: Material) -> None:
    files = plan_of(
        version,
        chain=False,
        chain_path="/srv/app/tls/chain.pem",
        fullchain_path="/srv/app/tls/full.pem",
    )
    assert set(files) == {"cert.pem", "key.pem", "full.pem"}
    assert files["full.pem"] == (FileRole.CERT, version.cert_pem)


def test_commands_are_optional_and_checked(version: Material) -> None:
    bare = load_connector("file", BASE).plan(version.cert_pem, b"", version.key_pem)
    assert (bare.validate, bare.reload) == (None, None)
    hooked = load_connector(
        "file",
        BASE | {"validate_command": "app check", "reload_command": ["systemctl", "reload", "app"]},
    ).plan(version.cert_pem, b"", version.key_pem)
    assert hooked.validate == ("app", "check")
    assert hooked.reload == ("systemctl", "reload", "app")
    with pytest.raises(TargetConfigInvalid, match="reload_command"):
        load_connector("file", BASE | {"reload_command": "app reload && touch x"})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"key_path": BASE["cert_path"]}, "key_path is the same file as cert_path"),
        (
            {"chain_path": "/c.pem", "fullchain_path": "/c.pem"},
            "fullchain_path is the same file as chain_path",
        ),
        ({"cert_path": "tls/cert.pem"}, "cert_path"),
        ({"pem_path": "/x.pem"}, "pem_path is not a known field"),
        ({"chain_file_owner": "app"}, "chain_file_owner and chain_file_group must be set together"),
    ],
)
def test_config_errors_name_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(TargetConfigInvalid, match=message):
        load_connector("file", BASE | extra)


def test_key_path_is_required() -> None:
    with pytest.raises(TargetConfigInvalid, match="File target: key_path is required"):
        load_connector("file", {"cert_path": BASE["cert_path"]})


def test_verification_only_with_an_endpoint(version: Material) -> None:
    plain = load_connector("file", BASE)
    assert plain.endpoint(version.leaf()) is None
    assert plain.verifier(version.leaf()) is None
    verified = load_connector("file", BASE | {"post_deploy_verify": {"endpoint": "127.0.0.1:8443"}})
    assert verified.endpoint(version.leaf()) == Endpoint("127.0.0.1", 8443, "app.example.test")
    disabled = load_connector(
        "file", BASE | {"post_deploy_verify": {"endpoint": "127.0.0.1:8443", "enabled": False}}
    )
    assert disabled.endpoint(version.leaf()) is None


async def test_a_deploy_writes_the_files_and_skips_verification(
    tmp_path: Path, version: Material
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    connector = load_connector(
        "file", {"cert_path": f"{live}/cert.pem", "key_path": f"{live}/key.pem"}
    )
    engine = Engine(str(tmp_path / "state"))
    result = await connector.deploy(engine, version.cert_pem, version.chain_pem, version.key_pem)
    assert result.verification is None
    assert (live / "cert.pem").read_bytes() == version.cert_pem + version.chain_pem
    assert (live / "key.pem").read_bytes() == version.key_pem
