"""Each connector's plan applied by the real engine to a directory: modes, owners, layout.

These are the documented defaults (docs/connectors.md): which modes are always applied,
which are kept from an existing file, and who owns a new file. Traefik and Envoy, which
cannot run here, are checked this way too: the files their servers read, byte for byte.
Owners are checked where the engine can give files away (as root, as in CI).
"""

from __future__ import annotations

import json
import os
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest

from certctl.connectors.targets.base import Material
from certctl.connectors.targets.registry import load_connector
from certctl.core.model import TargetType
from certctl.deploy import Engine, Result
from certctl.testing.material import ScratchCA

ROOT = os.geteuid() == 0
HOOKS = {"reload_command": "true", "validate_command": "true"}
# target type → (config, {file name: (mode when new, mode over an existing 0666 file)},
# owners tried in order for new files)
LAYOUTS: dict[TargetType, tuple[dict[str, Any], dict[str, tuple[int, int]], tuple[str, ...]]] = {
    TargetType.NGINX: (
        {"cert_path": "{d}/cert.pem", "key_path": "{d}/key.pem", "chain_path": "{d}/chain.pem"}
        | HOOKS,
        {"cert.pem": (0o644, 0o666), "key.pem": (0o640, 0o640), "chain.pem": (0o644, 0o666)},
        ("nginx", "www-data"),
    ),
    TargetType.APACHE: (
        {"cert_path": "{d}/cert.pem", "key_path": "{d}/key.pem", "chain_path": "{d}/chain.pem"}
        | HOOKS,
        {"cert.pem": (0o644, 0o666), "key.pem": (0o600, 0o600), "chain.pem": (0o644, 0o666)},
        ("apache", "www-data", "httpd"),
    ),
    TargetType.POSTFIX: (
        {"cert_path": "{d}/cert.pem", "key_path": "{d}/key.pem"} | HOOKS,
        {"cert.pem": (0o644, 0o666), "key.pem": (0o600, 0o600)},
        ("postfix", "_postfix"),
    ),
    TargetType.DOVECOT: (
        {"cert_path": "{d}/cert.pem", "key_path": "{d}/key.pem"} | HOOKS,
        {"cert.pem": (0o644, 0o666), "key.pem": (0o600, 0o600)},
        ("dovecot",),
    ),
    TargetType.HAPROXY: (
        {"pem_path": "{d}/site.pem", "reload_command": "true"},
        {"site.pem": (0o600, 0o600)},
        ("haproxy",),
    ),
    TargetType.TRAEFIK: (
        {"cert_dir": "{d}"},
        {"cert.pem": (0o644, 0o644), "key.pem": (0o600, 0o600)},
        (),
    ),
    TargetType.CADDY: (
        {"cert_dir": "{d}", "reload_command": "true", "validate_command": "true"},
        {"cert.pem": (0o644, 0o644), "key.pem": (0o600, 0o600)},
        (),
    ),
    TargetType.ENVOY: (
        {"cert_dir": "{d}", "sds_config": True},
        {"cert.pem": (0o644, 0o644), "key.pem": (0o600, 0o600), "sds.json": (0o644, 0o644)},
        (),
    ),
    TargetType.FILE: (
        {
            "cert_path": "{d}/cert.pem",
            "key_path": "{d}/key.pem",
            "chain_path": "{d}/chain.pem",
            "fullchain_path": "{d}/fullchain.pem",
        },
        {
            "cert.pem": (0o644, 0o666),
            "key.pem": (0o600, 0o600),
            "chain.pem": (0o644, 0o666),
            "fullchain.pem": (0o644, 0o666),
        },
        (),
    ),
}


@pytest.fixture(scope="module")
def version() -> Material:
    return ScratchCA("connector files").issue("files.example.test")


def config_for(kind: TargetType, directory: Path, **extra: Any) -> dict[str, Any]:
    template, _, _ = LAYOUTS[kind]
    config = {k: v.format(d=directory) if isinstance(v, str) else v for k, v in template.items()}
    return config | {"post_deploy_verify": {"enabled": False}} | extra


def apply(kind: TargetType, directory: Path, version: Material, **extra: Any) -> Result:
    connector = load_connector(kind, config_for(kind, directory, **extra))
    engine = Engine(str(directory.parent / "state"))
    return engine.apply(connector.plan(version.cert_pem, version.chain_pem, version.key_pem))


def expected_uid(owners: tuple[str, ...]) -> int:
    """The first documented owner that exists here, else the deploying user."""
    for name in owners:
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
    return os.geteuid()


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_new_files_get_the_documented_modes_and_owner(
    kind: TargetType, tmp_path: Path, version: Material
) -> None:
    directory = tmp_path / "live"
    directory.mkdir()
    result = apply(kind, directory, version)
    assert not result.skipped_as_idempotent
    _, modes, owners = LAYOUTS[kind]
    assert sorted(p.name for p in directory.iterdir()) == sorted(modes)
    for name, (new_mode, _) in modes.items():
        st = (directory / name).stat()
        assert stat.S_IMODE(st.st_mode) == new_mode, name
        if ROOT:
            assert st.st_uid == expected_uid(owners), name


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_existing_files_keep_what_the_connector_does_not_force(
    kind: TargetType, tmp_path: Path, version: Material, issuer_two: Material
) -> None:
    """An existing 0666 file keeps its mode unless the connector always sets it (keys,
    HAProxy's PEM, the cert-directory targets); its owner is kept in every case."""
    directory = tmp_path / "live"
    directory.mkdir()
    apply(kind, directory, issuer_two)
    _, modes, _ = LAYOUTS[kind]
    nobody = pwd.getpwnam("nobody")
    for name in modes:
        (directory / name).chmod(0o666)
        if ROOT:
            os.chown(directory / name, nobody.pw_uid, nobody.pw_gid)
    apply(kind, directory, version)
    for name, (_, kept_mode) in modes.items():
        st = (directory / name).stat()
        assert stat.S_IMODE(st.st_mode) == kept_mode, name
        if ROOT:
            assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), name


@pytest.fixture(scope="module")
def issuer_two() -> Material:
    return ScratchCA("connector files, older").issue("files.example.test")


@pytest.mark.skipif(not ROOT, reason="giving files to another user needs root")
def test_explicit_modes_and_owners_win(tmp_path: Path, version: Material) -> None:
    directory = tmp_path / "live"
    directory.mkdir()
    nobody = pwd.getpwnam("nobody")
    apply(
        TargetType.NGINX,
        directory,
        version,
        cert_file_mode="0640",
        cert_file_owner="nobody",
        cert_file_group=str(nobody.pw_gid),
        key_file_mode="0400",
    )
    cert, key = (directory / "cert.pem").stat(), (directory / "key.pem").stat()
    assert (stat.S_IMODE(cert.st_mode), cert.st_uid, cert.st_gid) == (
        0o640,
        nobody.pw_uid,
        nobody.pw_gid,
    )
    assert stat.S_IMODE(key.st_mode) == 0o400


def test_traefik_files_are_what_its_file_provider_reads(tmp_path: Path, version: Material) -> None:
    directory = tmp_path / "live"
    directory.mkdir()
    apply(TargetType.TRAEFIK, directory, version)
    assert (directory / "cert.pem").read_bytes() == version.cert_pem + version.chain_pem
    assert (directory / "key.pem").read_bytes() == version.key_pem


def test_envoy_sds_names_the_files_it_sits_next_to(tmp_path: Path, version: Material) -> None:
    directory = tmp_path / "live"
    directory.mkdir()
    apply(TargetType.ENVOY, directory, version)
    (resource,) = json.loads((directory / "sds.json").read_text())["resources"]
    certificate = resource["tls_certificate"]
    chain = Path(certificate["certificate_chain"]["filename"]).read_bytes()
    assert chain == version.cert_pem + version.chain_pem
    assert Path(certificate["private_key"]["filename"]).read_bytes() == version.key_pem
    assert certificate["watched_directory"]["path"] == str(directory)


def test_a_redeploy_of_envoy_with_sds_is_idempotent(tmp_path: Path, version: Material) -> None:
    """sds.json is deterministic, so it never defeats the all-files SHA-256 check."""
    directory = tmp_path / "live"
    directory.mkdir()
    apply(TargetType.ENVOY, directory, version)
    assert apply(TargetType.ENVOY, directory, version).skipped_as_idempotent
