"""The host policy: what it refuses in a plan, how its file is loaded, and the deploy path
refusing before anything is written or run."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from certctl import config
from certctl.agent.policy import BUILT_IN, HostPolicy, Rules, load_policy, write_policy
from certctl.connectors.targets.registry import load_connector
from certctl.core.model import TargetType
from certctl.deploy import Engine, File, FileDefaults, FileRole, Plan, PolicyRefused
from certctl.testing.material import ScratchCA
from certctl.testing.policy import allowing

NGINX = TargetType.NGINX


def plan(*files: File, validate: tuple[str, ...] | None = None, **extra: object) -> Plan:
    return Plan(files=files, validate=validate, **extra)  # type: ignore[arg-type]


def cert(path: str, **extra: object) -> File:
    return File(path=path, data=b"c", role=FileRole.CERT, **extra)  # type: ignore[arg-type]


def built_in(state_dir: str = "/var/lib/certctl-agent") -> HostPolicy:
    return HostPolicy(dict(BUILT_IN), None, (state_dir,))


# -- the checks -------------------------------------------------------------------------


def test_the_built_in_policy_allows_the_conventional_nginx_deploy() -> None:
    built_in().check(
        NGINX,
        plan(
            cert("/etc/nginx/certs/site.pem", mode=0o644),
            File("/etc/nginx/certs/site.key", b"k", FileRole.KEY, mode=0o640),
            validate=("nginx", "-t"),
            reload=("nginx", "-s", "reload"),
            defaults=FileDefaults(mode=0o644, owner="www-data", group="www-data"),
        ),
    )


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (("sh", "-c", "id > /tmp/x"), "connectors.nginx.commands"),
        (("/bin/sh", "-c", "touch /tmp/x"), "connectors.nginx.commands"),
        (("python3", "-c", "import os"), "connectors.nginx.commands"),
        (("nginx", "-s", "stop"), "connectors.nginx.commands"),
        (("nginx", "-t", "-c", "/root/.ssh/id_rsa"), "connectors.nginx.command_prefixes"),
    ],
)
def test_a_command_outside_the_policy_is_refused_naming_the_key(
    argv: tuple[str, ...], key: str
) -> None:
    with pytest.raises(PolicyRefused, match=key) as refused:
        built_in().check(NGINX, plan(cert("/etc/nginx/a.pem"), reload=argv))
    assert "CERTCTL_AGENT_POLICY_FILE" in str(refused.value)


@pytest.mark.parametrize(
    "path",
    [
        "/etc/shadow",
        "/root/.ssh/authorized_keys",
        "/etc/sudoers.d/x",
        "/etc/nginx-evil/x.pem",
        "/etc/ssl/certctl-other/x.pem",
    ],
)
def test_a_path_outside_the_write_roots_is_refused(path: str) -> None:
    with pytest.raises(PolicyRefused, match=r"connectors\.nginx\.write_roots"):
        built_in().check(NGINX, plan(cert(path)))


def test_the_agent_state_directory_is_never_written(tmp_path: Path) -> None:
    state = tmp_path / "state"
    policy = allowing([tmp_path], state_dir=state)
    with pytest.raises(PolicyRefused, match="state directory"):
        policy.check(TargetType.FILE, plan(cert(str(state / "agent.key"))))
    policy.check(TargetType.FILE, plan(cert(str(tmp_path / "live" / "cert.pem"))))


def test_a_symlinked_directory_cannot_lead_out_of_the_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    policy = allowing([root])
    with pytest.raises(PolicyRefused, match="resolved to"):
        policy.check(TargetType.FILE, plan(cert(str(root / "link" / "authorized_keys"))))


@pytest.mark.parametrize("mode", [0o4755, 0o2644, 0o1644])
def test_special_mode_bits_are_never_allowed(mode: int) -> None:
    with pytest.raises(PolicyRefused, match="setuid, setgid and sticky"):
        built_in().check(NGINX, plan(cert("/etc/nginx/a.pem", mode=mode)))


def test_modes_above_the_limits_are_refused() -> None:
    policy = built_in()
    with pytest.raises(PolicyRefused, match=r"connectors\.nginx\.max_mode \(0644\)"):
        policy.check(NGINX, plan(cert("/etc/nginx/a.pem", mode=0o666)))
    key = File("/etc/nginx/a.key", b"k", FileRole.KEY, mode=0o644)
    with pytest.raises(PolicyRefused, match=r"connectors\.nginx\.max_key_mode \(0640\)"):
        policy.check(NGINX, plan(key))
    new_key = File("/etc/nginx/a.key", b"k", FileRole.KEY)
    with pytest.raises(PolicyRefused, match=r"mode 0644 for /etc/nginx/a\.key.*max_key_mode"):
        policy.check(NGINX, plan(new_key, defaults=FileDefaults(mode=0o644)))


def test_owners_and_groups_outside_the_policy_are_refused() -> None:
    policy = built_in()
    with pytest.raises(PolicyRefused, match=r"owner 'daemon'.*connectors\.nginx\.owners"):
        policy.check(NGINX, plan(cert("/etc/nginx/a.pem", owner="daemon", group="root")))
    with pytest.raises(PolicyRefused, match=r"group 'shadow'.*connectors\.nginx\.groups"):
        policy.check(NGINX, plan(cert("/etc/nginx/a.pem", owner="root", group="shadow")))
    policy.check(NGINX, plan(cert("/etc/nginx/a.pem", owner="0", group="0")))  # root by id
    defaults = FileDefaults(owner="daemon", group="daemon")
    with pytest.raises(PolicyRefused, match=r"owner 'daemon' for /etc/nginx/a\.pem"):
        policy.check(NGINX, plan(cert("/etc/nginx/a.pem"), defaults=defaults))
    # Defaults that no file uses are not the plan's to answer for.
    explicit = cert("/etc/nginx/a.pem", owner="root", group="root")
    policy.check(NGINX, plan(explicit, defaults=defaults))


def test_prefixes_allow_further_arguments_only_after_them() -> None:
    rules = Rules(write_roots=("/srv",), command_prefixes=(("/usr/local/bin/reload",),))
    policy = HostPolicy({TargetType.FILE: rules}, Path("/etc/certctl/p.toml"))
    policy.check(TargetType.FILE, plan(cert("/srv/a"), reload=("/usr/local/bin/reload", "x")))
    with pytest.raises(PolicyRefused, match=r"of /etc/certctl/p\.toml"):
        policy.check(TargetType.FILE, plan(cert("/srv/a"), reload=("/usr/local/bin/other",)))


def test_a_program_matches_by_name_or_by_path() -> None:
    true = shutil.which("true")
    assert true is not None
    policy = allowing(["/srv"], [["true"]])
    policy.check(TargetType.FILE, plan(cert("/srv/a"), reload=(true,)))
    policy.check_probe(TargetType.FILE, (true, "-t", "-c", "/tmp/x"))
    with pytest.raises(PolicyRefused, match="dry run"):
        policy.check_probe(TargetType.FILE, ("/bin/sh", "-t"))


def test_the_caddy_admin_hook_is_allowed_for_the_loopback_api_only() -> None:
    policy = built_in()
    hook = (sys.executable, "-m", "certctl.connectors.targets.caddy_admin", "reload")
    files = plan(cert("/etc/caddy/certs/cert.pem"))
    policy.check(TargetType.CADDY, Plan(files.files, reload=(*hook, "http://localhost:2019")))
    with pytest.raises(PolicyRefused):
        policy.check(TargetType.CADDY, Plan(files.files, reload=(*hook, "http://10.0.0.1:2019")))


# -- the file ---------------------------------------------------------------------------


def settings(tmp_path: Path, policy_file: Path | None) -> config.Settings:
    env = {"CERTCTL_AGENT_STATE_DIR": str(tmp_path / "state")}
    if policy_file is not None:
        env["CERTCTL_AGENT_POLICY_FILE"] = str(policy_file)
    return config.load(env)


def write(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    folder = tmp_path / "etc"
    folder.mkdir(exist_ok=True, mode=0o755)
    path = folder / "agent-policy.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_without_a_file_the_built_in_policy_applies(tmp_path: Path) -> None:
    policy = load_policy(settings(tmp_path, None))
    assert policy.source is None
    assert policy.rules == BUILT_IN
    assert policy.protected == (str(tmp_path / "state"),)


def test_file_keys_override_defaults_and_connectors_override_both(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [defaults]
        write_roots = ["/srv/tls"]
        max_mode = "0640"
        [connectors.NGINX]
        write_roots = ["/etc/nginx"]
        commands = ["nginx -t", ["/usr/sbin/nginx", "-s", "reload"]]
        command_prefixes = [["/usr/local/bin/deploy-hook"]]
        owners = ["root", "www-data"]
        """,
    )
    policy = load_policy(settings(tmp_path, path))
    nginx = policy.rules[NGINX]
    assert nginx.write_roots == ("/etc/nginx",)
    assert nginx.commands == (("nginx", "-t"), ("/usr/sbin/nginx", "-s", "reload"))
    assert nginx.command_prefixes == (("/usr/local/bin/deploy-hook",),)
    assert nginx.max_mode == 0o640
    assert policy.rules[TargetType.FILE].write_roots == ("/srv/tls",)
    assert policy.rules[TargetType.HAPROXY].commands == BUILT_IN[TargetType.HAPROXY].commands
    # What `policy show` prints loads back to the same policy.
    again = load_policy(settings(tmp_path, write_policy(tmp_path / "copy" / "p.toml", policy)))
    assert again.rules == policy.rules


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults]\nwrite_roots = 'x'", "defaults.write_roots must be a list"),
        ("[defaults]\nwrite_roots = ['etc/nginx']", "not an absolute, normalized directory"),
        ("[defaults]\nwrite_roots = ['/']", "below /"),
        ("[defaults]\nmax_mode = '4755'", "setuid"),
        ("[defaults]\nreload = []", "defaults.reload is not a policy key"),
        ("[connectors.gopher]\ncommands = []", "target type 'gopher' is unknown"),
        ("[connectors.nginx]\ncommands = ['a && b']", "shell syntax"),
        ("[connectors.nginx]\ncommands = [5]", "is not a command"),
        ("[server]\nx = 1", "'server' is not a policy table"),
        ("[defaults\n", "is not valid TOML"),
    ],
)
def test_a_bad_policy_file_is_one_line_naming_the_variable(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(config.ConfigError, match=message) as refused:
        load_policy(settings(tmp_path, write(tmp_path, text)))
    assert refused.value.variable == "CERTCTL_AGENT_POLICY_FILE"
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_policy_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, "", mode)
    with pytest.raises(config.ConfigError, match=r"writable by its group or others.*chmod go-w"):
        load_policy(settings(tmp_path, path))


def test_a_policy_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    path.parent.chmod(0o777)
    with pytest.raises(config.ConfigError, match="others can write to"):
        load_policy(settings(tmp_path, path))


def test_a_policy_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    path = write(tmp_path, "")
    os.chown(path, 65534, 65534)
    with pytest.raises(config.ConfigError, match="owned by uid 65534, not root"):
        load_policy(settings(tmp_path, path))


def test_a_missing_or_odd_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot be read"):
        load_policy(settings(tmp_path, tmp_path / "nope.toml"))
    folder = tmp_path / "etc"
    folder.mkdir(mode=0o755)
    (folder / "dir.toml").mkdir()
    with pytest.raises(config.ConfigError, match="not a regular file"):
        load_policy(settings(tmp_path, folder / "dir.toml"))


# -- the deploy path --------------------------------------------------------------------


async def test_a_refused_deploy_writes_nothing_and_runs_nothing(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    live = tmp_path / "live"
    config_ = {
        "cert_path": str(live / "cert.pem"),
        "key_path": str(live / "key.pem"),
        "reload_command": ["touch", str(canary)],
    }
    connector = load_connector(TargetType.FILE, config_)
    material = ScratchCA("policy").issue("www.example.test")
    engine = Engine(str(tmp_path / "engine"))
    live.mkdir()
    with pytest.raises(PolicyRefused, match="reload command 'touch"):
        await connector.deploy(
            engine,
            material.cert_pem,
            material.chain_pem,
            material.key_pem,
            guard=allowing([live]),
        )
    assert not canary.exists()
    assert list(live.iterdir()) == []
    with pytest.raises(PolicyRefused, match="reload command 'touch"):
        await connector.validate_only(
            material.cert_pem, material.chain_pem, material.key_pem, guard=allowing([live])
        )
    assert not canary.exists()
    result = await connector.deploy(
        engine,
        material.cert_pem,
        material.chain_pem,
        material.key_pem,
        guard=allowing([live], [["touch", str(canary)]]),
    )
    assert result.reloaded
    assert canary.exists()


def test_the_documented_example_policy_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    policy = load_policy(settings(tmp_path, write(tmp_path, example)))
    nginx = policy.rules[NGINX]
    assert nginx.write_roots == ("/etc/nginx/certs",)
    assert ("systemctl", "reload", "nginx") in nginx.commands
    assert policy.rules[TargetType.FILE].write_roots == ("/etc/ssl/certctl",)
