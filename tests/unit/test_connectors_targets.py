"""Target configs and the plans they make: defaults, field types, errors, layouts.

No file is written here; ``test_connectors_files`` applies plans to a real directory.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from certctl.connectors.targets.base import Material, TargetConfigInvalid
from certctl.connectors.targets.fields import (
    parse_command_field,
    parse_duration,
    parse_host_port,
    parse_mode,
)
from certctl.connectors.targets.registry import CONNECTORS, load_connector, target_type
from certctl.core.model import TargetType
from certctl.deploy import Endpoint, FileRole
from certctl.testing import material as testing_material

NGINX = {
    "cert_path": "/etc/nginx/certs/site.pem",
    "key_path": "/etc/nginx/certs/site.key",
    "reload_command": "nginx -s reload",
    "validate_command": "nginx -t",
}
MINIMAL: dict[TargetType, dict[str, Any]] = {
    TargetType.NGINX: NGINX,
    TargetType.APACHE: {**NGINX, "chain_path": "/etc/nginx/certs/chain.pem"},
    TargetType.HAPROXY: {"pem_path": "/etc/haproxy/site.pem", "reload_command": "true"},
    TargetType.TRAEFIK: {"cert_dir": "/etc/traefik/certs"},
    TargetType.CADDY: {"cert_dir": "/etc/caddy/certs"},
    TargetType.ENVOY: {"cert_dir": "/etc/envoy/certs"},
    TargetType.POSTFIX: {},
    TargetType.DOVECOT: {},
    TargetType.FILE: {"cert_path": "/srv/app/cert.pem", "key_path": "/srv/app/key.pem"},
}


@pytest.fixture(scope="module")
def version() -> testing_material.Material:
    return testing_material.ScratchCA("connector unit").issue("www.example.test")


def plan_files(kind: TargetType, version: testing_material.Material, **extra: Any) -> list[Any]:
    connector = load_connector(kind, {**MINIMAL[kind], **extra})
    return list(connector.plan(version.cert_pem, version.chain_pem, version.key_pem).files)


def error(kind: TargetType, config: dict[str, Any]) -> str:
    with pytest.raises(TargetConfigInvalid) as failure:
        load_connector(kind, config)
    return str(failure.value)


def test_every_target_type_has_a_connector() -> None:
    assert set(CONNECTORS) == set(TargetType)
    assert set(MINIMAL) == set(TargetType)


@pytest.mark.parametrize("name", ["nginx", "NGINX", "HAProxy", "haproxy", "Postfix"])
def test_type_names_are_case_insensitive(name: str) -> None:
    assert target_type(name).value.lower() == name.lower()


def test_unknown_type_lists_the_choices() -> None:
    with pytest.raises(TargetConfigInvalid, match="'iis' is unknown; choose one of nginx"):
        target_type("iis")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("250ms", 0.25), ("1m30s", 90.0), ("2h", 7200.0), ("1.5s", 1.5)],
)
def test_durations_take_go_spelling(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [10, 10.0, "10", "ten seconds", "0s", "-1s", "", None])
def test_durations_without_a_unit_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(("text", "mode"), [("0640", 0o640), ("640", 0o640), ("0o600", 0o600)])
def test_modes_are_octal_strings(text: str, mode: int) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize("value", [416, 640, "0648", "rw-r-----", "12345", None])
def test_modes_that_could_be_misread_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match='octal string, like "0640"'):
        parse_mode(value)


def test_command_strings_split_like_a_shell() -> None:
    assert parse_command_field("systemctl reload 'my nginx'") == (
        "systemctl",
        "reload",
        "my nginx",
    )
    assert parse_command_field(["nginx", "-s", "reload"]) == ("nginx", "-s", "reload")


@pytest.mark.parametrize(
    "value",
    ["nginx -t && nginx -s reload", "nginx -s reload; rm -rf /", "echo $HOME", "a | b", "`id`"],
)
def test_command_strings_needing_a_shell_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="shell syntax"):
        parse_command_field(value)


@pytest.mark.parametrize("value", [[], [""], ["nginx", 1], 42, ""])
def test_empty_or_mistyped_commands_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="command"):
        parse_command_field(value)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:443", "127.0.0.1", 443),
        ("[::1]:8443", "::1", 8443),
        ("mx.test:465", "mx.test", 465),
    ],
)
def test_endpoints(text: str, host: str, port: int) -> None:
    address = parse_host_port(text)
    assert (address.host, address.port) == (host, port)
    assert parse_host_port(str(address)) == address


@pytest.mark.parametrize("value", ["localhost", "::1:443", "[nope]:1", "h:0", "h:65536", 443])
def test_bad_endpoints_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"endpoint|port"):
        parse_host_port(value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**NGINX, "cert_path": "certs/site.pem"}, "NGINX target: cert_path: 'certs/site.pem' is"),
        ({**NGINX, "cert_path": "/etc/../x.pem"}, "absolute, normalized path"),
        ({k: v for k, v in NGINX.items() if k != "key_path"}, "key_path is required; set it."),
        ({**NGINX, "colour": "blue"}, "colour is not a known field; remove it"),
        ({**NGINX, "key_file_mode": 416}, "key_file_mode: 416 is not a file mode"),
        ({**NGINX, "command_timeout": 30}, "command_timeout: 30 is not a duration"),
        ({**NGINX, "backup_retention": -2}, "backup_retention: input should be greater than"),
        ({**NGINX, "backup_retention": "3"}, "backup_retention: input should be a valid integer"),
        (
            {**NGINX, "reload_command": "kill -HUP $(cat pid)"},
            "reload_command: the command contains",
        ),
        ({**NGINX, "key_file_owner": "root"}, "key_file_owner and key_file_group must be set"),
        (
            {**NGINX, "post_deploy_verify": {"backoff": "5s", "max_backoff": "1s"}},
            "post_deploy_verify: max_backoff is shorter than backoff",
        ),
        ({**NGINX, "post_deploy_verify": {"attempts": 0}}, "post_deploy_verify.attempts"),
        ({**NGINX, "post_deploy_verify": {"enabled": "no"}}, "valid boolean"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(config: dict[str, Any], message: str) -> None:
    text = error(TargetType.NGINX, config)
    assert message in text
    assert "\n" not in text
    assert text.endswith(".")


def test_configs_round_trip_through_json() -> None:
    connector = load_connector(TargetType.NGINX, {**NGINX, "key_file_mode": "0600"})
    dumped = json.loads(connector.config.model_dump_json())
    assert dumped["key_file_mode"] == "0600"
    assert dumped["command_timeout"] == "60s"
    assert dumped["reload_command"] == ["nginx", "-s", "reload"]
    assert load_connector(TargetType.NGINX, dumped).config == connector.config


def test_nginx_appends_the_chain_unless_it_has_its_own_file(
    version: testing_material.Material,
) -> None:
    cert, key = plan_files(TargetType.NGINX, version)
    assert (cert.role, cert.data) == (FileRole.FULLCHAIN, version.cert_pem + version.chain_pem)
    assert (key.role, key.mode, key.data) == (FileRole.KEY, 0o640, version.key_pem)
    assert cert.mode is None  # an existing certificate keeps its mode

    cert, key, chain = plan_files(TargetType.NGINX, version, chain_path="/etc/nginx/chain.pem")
    assert (cert.role, cert.data) == (FileRole.CERT, version.cert_pem)
    assert (chain.role, chain.data) == (FileRole.CHAIN, version.chain_pem)


def test_no_chain_means_no_chain_file(version: testing_material.Material) -> None:
    connector = load_connector(TargetType.APACHE, MINIMAL[TargetType.APACHE])
    plan = connector.plan(version.cert_pem, b"", version.key_pem)
    assert [f.role for f in plan.files] == [FileRole.CERT, FileRole.KEY]


def test_pem_blocks_are_joined_without_blank_lines() -> None:
    material = Material(b"\n\nCERT\n\n", b"CHAIN\r\n", b"KEY")
    assert material.combined == b"CERT\nCHAIN\nKEY\n"
    assert Material(b"CERT\n", b"", b"KEY\n").fullchain == b"CERT\n"


def test_haproxy_writes_one_combined_file_0600(version: testing_material.Material) -> None:
    (pem,) = plan_files(TargetType.HAPROXY, version)
    assert pem.role is FileRole.COMBINED
    assert pem.data == version.cert_pem + version.chain_pem + version.key_pem
    assert pem.mode == 0o600
    (pem,) = plan_files(TargetType.HAPROXY, version, pem_file_mode="0640")
    assert pem.mode == 0o640


MAIL_DEFAULTS = {
    TargetType.POSTFIX: ("/etc/postfix/certs", "postfix check", "postfix reload", 465),
    TargetType.DOVECOT: ("/etc/dovecot/certs", "doveconf -n", "doveadm reload", 993),
}


@pytest.mark.parametrize("kind", list(MAIL_DEFAULTS))
def test_mail_defaults_apply_on_every_load(
    version: testing_material.Material, kind: TargetType
) -> None:
    """The earlier implementation applied these only in a method the agent never called."""
    directory, validate, reload, port = MAIL_DEFAULTS[kind]
    connector = load_connector(kind, {})
    plan = connector.plan(version.cert_pem, version.chain_pem, version.key_pem)
    assert [(f.path, f.role, f.mode) for f in plan.files] == [
        (f"{directory}/cert.pem", FileRole.FULLCHAIN, None),
        (f"{directory}/key.pem", FileRole.KEY, 0o600),
    ]
    assert (plan.validate, plan.reload) == (tuple(validate.split()), tuple(reload.split()))
    assert plan.defaults.mode == 0o644
    endpoint = connector.endpoint(version.leaf())
    assert endpoint == Endpoint("127.0.0.1", port, "www.example.test")


@pytest.mark.parametrize("kind", [TargetType.TRAEFIK, TargetType.CADDY, TargetType.ENVOY])
def test_cert_dir_targets_write_full_chain_0644_and_key_0600(
    kind: TargetType, version: testing_material.Material
) -> None:
    cert, key, *_ = plan_files(kind, version, cert_file="fullchain.pem")
    assert (cert.path, cert.role, cert.mode) == (
        f"{MINIMAL[kind]['cert_dir']}/fullchain.pem",
        FileRole.FULLCHAIN,
        0o644,
    )
    assert (key.path, key.mode) == (f"{MINIMAL[kind]['cert_dir']}/key.pem", 0o600)


@pytest.mark.parametrize("name", ["../key.pem", "sub/key.pem", "a\\b", "..", ""])
def test_file_names_cannot_leave_the_directory(name: str) -> None:
    assert "plain file name" in error(TargetType.ENVOY, {"cert_dir": "/x", "key_file": name})


def test_envoy_sds_points_at_the_deployed_files(version: testing_material.Material) -> None:
    cert, key, chain, sds = plan_files(
        TargetType.ENVOY, version, sds_config=True, chain_file="chain.pem"
    )
    assert cert.data == version.cert_pem + version.chain_pem  # Envoy serves only this file
    assert (chain.role, chain.data) == (FileRole.CHAIN, version.chain_pem)
    assert (sds.path, sds.role, sds.mode) == ("/etc/envoy/certs/sds.json", FileRole.OTHER, 0o644)
    (resource,) = json.loads(sds.data)["resources"]
    assert resource["@type"].endswith("tls.v3.Secret")
    assert resource["name"] == "server_cert"
    assert resource["tls_certificate"] == {
        "certificate_chain": {"filename": cert.path},
        "private_key": {"filename": key.path},
        "watched_directory": {"path": "/etc/envoy/certs"},
    }


def test_caddy_hooks_by_mode() -> None:
    api = load_connector(
        TargetType.CADDY, {"cert_dir": "/c", "admin_api": "http://127.0.0.1:2019/"}
    )
    plan = api.plan(b"", b"", b"")
    assert plan.reload is not None
    assert plan.validate is not None
    assert plan.reload[-3:] == (
        "certctl.connectors.targets.caddy_admin",
        "reload",
        "http://127.0.0.1:2019",
    )
    assert plan.validate[-2:] == ("check", "http://127.0.0.1:2019")

    file_mode = load_connector(TargetType.CADDY, {"cert_dir": "/c", "mode": "file"}).plan(
        b"", b"", b""
    )
    assert file_mode.reload == ("caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--force")
    assert file_mode.validate == ("caddy", "validate", "--config", "/etc/caddy/Caddyfile")

    explicit = {"cert_dir": "/c", "reload_command": "systemctl reload caddy"}
    assert load_connector(TargetType.CADDY, explicit).plan(b"", b"", b"").reload == (
        "systemctl",
        "reload",
        "caddy",
    )


@pytest.mark.parametrize("admin", ["localhost:2019", "file:///tmp/x", "http://h:1/config/"])
def test_caddy_admin_address_must_be_http(admin: str) -> None:
    assert "admin_api" in error(TargetType.CADDY, {"cert_dir": "/c", "admin_api": admin})


def test_plan_carries_the_common_settings(version: testing_material.Material) -> None:
    connector = load_connector(
        TargetType.NGINX, {**NGINX, "backup_retention": -1, "command_timeout": "90s"}
    )
    plan = connector.plan(version.cert_pem, version.chain_pem, version.key_pem)
    assert (plan.backup_retention, plan.hook_timeout, plan.target_type) == (-1, 90.0, "NGINX")


def test_verify_endpoint_defaults_and_overrides(version: testing_material.Material) -> None:
    default = load_connector(TargetType.NGINX, NGINX)
    assert default.endpoint(version.leaf()) == Endpoint("127.0.0.1", 443, "www.example.test")
    custom = load_connector(
        TargetType.NGINX,
        {**NGINX, "post_deploy_verify": {"endpoint": "[::1]:8443", "server_name": "a.test"}},
    )
    assert custom.endpoint(version.leaf()) == Endpoint("::1", 8443, "a.test")
    off = load_connector(TargetType.NGINX, {**NGINX, "post_deploy_verify": {"enabled": False}})
    assert off.endpoint(version.leaf()) is None
    assert off.verifier(version.leaf()) is None


@pytest.mark.parametrize("kind", [t for t in TargetType if t is not TargetType.FILE])
def test_every_connector_verifies_by_default(
    kind: TargetType, version: testing_material.Material
) -> None:
    """The earlier Caddy connector never verified, and others only with an endpoint set.

    The generic File type is the exception: it has no conventional port to verify
    (``test_connectors_file_target``)."""
    connector = load_connector(kind, MINIMAL[kind])
    assert connector.verifier(version.leaf()) is not None
