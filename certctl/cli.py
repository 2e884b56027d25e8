"""The ``certctl`` command.

Subcommands import their layers (store, connectors) when they run, so `certctl config
check` stays fast and works even where the database driver cannot load.

Exit codes: 0 success, 1 runtime failure, 2 configuration refused (one line on stderr
naming the variable and the fix), so wrappers and init systems can tell them apart.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from certctl import __version__, config

if TYPE_CHECKING:
    from certctl.store.postgres import PostgresStore

EXIT_CONFIG = 2

_T = TypeVar("_T")


def _environment(env_file: Path | None) -> dict[str, str]:
    """The env file's values under the process environment: a variable set at launch wins."""
    merged = config.read_env_file(env_file) if env_file else {}
    merged.update(os.environ)
    return merged


@click.group()
@click.version_option(__version__, prog_name="certctl")
def main() -> None:
    """certctl: TLS certificate lifecycle — issue, renew, deploy, verify, roll back."""


@main.group("config")
def config_group() -> None:
    """Inspect and bootstrap configuration."""


_ENV_FILE = click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read KEY=VALUE lines from this file; the process environment overrides them.",
)


@config_group.command("check")
@_ENV_FILE
@click.option(
    "--role",
    type=click.Choice([r.value for r in config.Role]),
    default=config.Role.SERVER.value,
    show_default=True,
    help="Which process the configuration is for.",
)
def config_check(env_file: Path | None, role: str) -> None:
    """Print the variables ROLE reads (secrets redacted); exit 2 if ROLE would refuse to start."""
    chosen = config.Role(role)
    try:
        settings = config.load(_environment(env_file))
    except config.ConfigError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    for env, shown, is_default in config.redacted(settings, chosen):
        click.echo(f"{env}={shown}" + ("  # default" if is_default else ""))
    try:
        _startup_checks(settings, chosen)
    except config.ConfigError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo(f"certctl: configuration is valid for the {role}.", err=True)


def _startup_checks(settings: config.Settings, role: config.Role) -> None:
    """The refusals the process of ``role`` makes before it does any work, in its order.

    The same functions the processes call, so "valid" means "would start": the server's
    TLS preflight (``certctl.server.main.run_server``), the agent's host policy, URL and CA
    bundle (``certctl.agent.process.run``). Imported here, not at the top, so that checking
    an agent's configuration never loads the server and vice versa.
    """
    now = datetime.now(UTC)
    config.validate(settings, role=role, now=now)
    if role is config.Role.SERVER:
        from certctl.server.tls import preflight

        preflight(
            settings.server_tls_cert_path, settings.server_tls_key_path, settings.server_host, now
        )
    else:
        from certctl.agent.connection import check_server_url, client_ssl_context
        from certctl.agent.policy import load_policy

        load_policy(settings)
        check_server_url(settings.server_url)
        # Verification off only changes how the context is used, not what it loads; passing
        # it would only log the start-up warning here.
        client_ssl_context(settings.server_ca_bundle_path, insecure=False)


@config_group.command("init")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("certctl.env"),
    show_default=True,
    help="Env file to write (mode 0600).",
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write a self-signed TLS pair for the server (default: tls/ beside --out).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def config_init(out: Path, tls_dir: Path | None, force: bool) -> None:
    """Write an env file with freshly generated secrets and a self-signed TLS pair (for
    localhost) that passes `config check`; replace the pair with your PKI's for real use."""
    from certctl.server.tls import TLSBootstrapError, init_tls

    if out.exists() and not force:
        click.echo(f"certctl: {out} exists; pass --force to overwrite it.", err=True)
        sys.exit(1)
    directory = (tls_dir or out.parent / "tls").absolute()
    try:
        made = init_tls(directory, hosts=(), force=force, now=datetime.now(UTC))
    except TLSBootstrapError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(
            f"certctl: cannot write to {directory} ({exc.strerror or exc}); pass a --tls-dir "
            "you can write to.",
            err=True,
        )
        sys.exit(1)
    lines = [
        "# Generated by `certctl config init`. Keep this file secret (mode 0600).",
        f"CERTCTL_API_KEYS=admin:{secrets.token_urlsafe(32)}:admin",
        f"CERTCTL_AGENT_BOOTSTRAP_TOKEN={secrets.token_urlsafe(32)}",
        f"CERTCTL_CONFIG_ENCRYPTION_KEY={secrets.token_urlsafe(32)}",
        f"CERTCTL_SERVER_TLS_CERT_PATH={made.cert_path}",
        f"CERTCTL_SERVER_TLS_KEY_PATH={made.key_path}",
    ]
    tmp = out.with_name(f".{out.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(out)
    click.echo(f"wrote {out}; check it with: certctl config check --env-file {out}")
    click.echo(f"agents trust the server through CERTCTL_SERVER_CA_BUNDLE_PATH={made.ca_path}")


@main.group("db")
def db_group() -> None:
    """Database schema: apply and inspect migrations."""


def _db_settings(env_file: Path | None) -> config.Settings:
    try:
        return config.load(_environment(env_file))
    except config.ConfigError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def _with_store(settings: config.Settings, work: Callable[[PostgresStore], Awaitable[_T]]) -> _T:
    """Run ``work`` on the configured store (embedded when no URL is set), without
    migrating on open: these commands are how an operator decides when that happens."""
    import trio

    from certctl.store.connect import open_store
    from certctl.store.errors import DataDirUnusable, StoreError

    where = {env: shown for env, shown, _ in config.redacted(settings, config.Role.SERVER)}
    if settings.database_url is None:
        click.echo(f"database: embedded PostgreSQL in {settings.effective_data_dir / 'postgres'}")
    else:
        click.echo(f"database: {where['CERTCTL_DATABASE_URL']}")

    async def run() -> _T:
        from certctl.services.rules import DOMAIN_RULES

        async with open_store(settings, DOMAIN_RULES, migrate=False) as store:
            return await work(store)

    try:
        result: _T = trio.run(run)
    except DataDirUnusable as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except StoreError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(1)
    return result


@db_group.command("migrate")
@_ENV_FILE
def db_migrate(env_file: Path | None) -> None:
    """Apply pending schema migrations (safe while other replicas do the same)."""
    applied = _with_store(_db_settings(env_file), lambda store: store.migrate())
    for migration in applied:
        click.echo(f"applied {migration.version:04d}_{migration.name}")
    click.echo("schema is up to date" + ("" if applied else "; nothing to apply"))


@db_group.command("status")
@_ENV_FILE
def db_status(env_file: Path | None) -> None:
    """List the schema migrations of this build and when each was applied."""
    states = _with_store(_db_settings(env_file), lambda store: store.migration_status())
    for state in states:
        when = state.applied_at.isoformat() if state.applied_at else "pending"
        click.echo(f"{state.version:04d}_{state.name}  {when}")
    pending = sum(1 for s in states if s.applied_at is None)
    click.echo(
        f"{len(states) - pending} of {len(states)} migrations applied"
        + (f"; run `certctl db migrate` to apply {pending}" if pending else "")
    )


@main.group("agent", invoke_without_command=True)
@_ENV_FILE
@click.option("--once", is_flag=True, help="One heartbeat and one poll, handle the work, exit.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate each of this agent's targets with throwaway material; change nothing.",
)
@click.pass_context
def agent_group(ctx: click.Context, env_file: Path | None, once: bool, dry_run: bool) -> None:
    """Run the agent: register, heartbeat, take work, deploy (until retired or stopped).

    Exit 0: retired by the control plane, or stopped by SIGTERM/SIGINT (and for --once and
    --dry-run: everything succeeded); 1: a failure; 2: the configuration is refused.
    """
    if ctx.invoked_subcommand is not None:
        if env_file or once or dry_run:
            raise click.UsageError(
                "--env-file, --once and --dry-run belong to the agent itself; drop --once "
                f"and --dry-run, and give --env-file after `certctl agent "
                f"{ctx.invoked_subcommand}` instead."
            )
        return
    if once and dry_run:
        raise click.UsageError("--once and --dry-run exclude each other; choose one.")
    from certctl.agent.process import Mode, run
    from certctl.logging import configure as configure_logging

    try:
        settings = config.load(_environment(env_file))
        config.validate(settings, role=config.Role.AGENT, now=datetime.now(UTC))
    except config.ConfigError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    configure_logging(settings.log_level, settings.log_format)
    mode = Mode.ONCE if once else Mode.DRY_RUN if dry_run else Mode.RUN
    sys.exit(run(settings, mode, out=click.echo, err=lambda line: click.echo(line, err=True)))


def _agent_settings(env_file: Path | None) -> config.Settings:
    try:
        return config.load(_environment(env_file))
    except config.ConfigError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


@agent_group.command("validate-target")
@click.option("--type", "type_name", required=True, help="Target type, e.g. nginx, haproxy.")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Target config as JSON.",
)
@click.option("--cert", type=click.Path(dir_okay=False, path_type=Path), help="Leaf PEM.")
@click.option("--chain", type=click.Path(dir_okay=False, path_type=Path), help="Chain PEM.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), help="Key PEM.")
@_ENV_FILE
def agent_validate_target(
    *,
    type_name: str,
    config_path: Path,
    cert: Path | None,
    chain: Path | None,
    key: Path | None,
    env_file: Path | None,
) -> None:
    """Validate a target config against this host's policy and dry-run its deploy,
    changing nothing.

    Without --cert/--key a throwaway self-signed certificate is staged. Exit 0: valid and
    the checks passed; 2: the config (or a file given, or the host policy) is unusable;
    1: a check failed or the host policy refuses the target.
    """
    from certctl.agent.policy import load_policy
    from certctl.connectors.targets.dry_run import validate_target

    try:
        policy = load_policy(_agent_settings(env_file))
    except config.ConfigError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    status, message = validate_target(type_name, config_path, cert, chain, key, guard=policy)
    click.echo(f"certctl: {message}", err=status != 0)
    sys.exit(status)


@agent_group.group("policy")
def agent_policy() -> None:
    """The host policy: what the control plane may make this agent write and run."""


@agent_policy.command("show")
@_ENV_FILE
def agent_policy_show(env_file: Path | None) -> None:
    """Print the effective host policy (CERTCTL_AGENT_POLICY_FILE over the built-in one)
    as TOML; exit 2 if the policy file is refused."""
    from certctl.agent.policy import load_policy

    try:
        policy = load_policy(_agent_settings(env_file))
    except config.ConfigError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    for line in policy.describe():
        click.echo(line)


@agent_group.command("install")
@click.option("--server-url", required=True, help="The control plane's https:// URL.")
@click.option(
    "--token",
    envvar="CERTCTL_AGENT_BOOTSTRAP_TOKEN",
    show_envvar=True,
    help="The bootstrap token; prefer the variable or --token-file (a command line is "
    "visible to every user of the host). Asked for when neither is given.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the bootstrap token.",
)
@click.option(
    "--ca-bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM of the CA that signed the control plane's certificate (default: system store).",
)
@click.option("--name", help="The agent's name (default: this host's name).")
@click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Root directory to write under (a staging tree or image).",
)
@click.option("--dry-run", is_flag=True, help="Print each file it would write; write nothing.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def agent_install(
    *,
    server_url: str,
    token: str | None,
    token_file: Path | None,
    ca_bundle: Path | None,
    name: str | None,
    prefix: Path,
    dry_run: bool,
    force: bool,
) -> None:
    """Write the agent's env file, a host policy and its systemd unit.

    The token is never printed. Exit 0: written (or shown, with --dry-run); 2: an option
    is refused or a file exists without --force; 1: a file cannot be written.
    """
    from certctl.agent.install import NEXT_COMMAND, Answers, plan, read_token, write

    if token is not None and token_file is not None:
        raise click.UsageError(
            "give the bootstrap token once: --token-file or --token "
            "(CERTCTL_AGENT_BOOTSTRAP_TOKEN), not both."
        )
    try:
        if token_file is not None:
            token = read_token(token_file)
        elif token is None:
            token = str(click.prompt("Bootstrap token", hide_input=True))
        answers = Answers(server_url, token, ca_bundle, name)
        made = plan(answers, prefix=prefix.absolute(), force=force, now=datetime.now(UTC))
    except config.ConfigError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    if dry_run:
        for item in made:
            click.echo(f"# would write {item.path} (mode {item.mode:04o})")
            click.echo(item.shown)
        click.echo(f"nothing written (--dry-run); then run: {NEXT_COMMAND}")
        return
    try:
        write(made)
    except OSError as exc:
        click.echo(
            f"certctl: cannot write under {prefix} ({exc.strerror or exc}: {exc.filename}); "
            "run as root or choose a --prefix you can write to.",
            err=True,
        )
        sys.exit(1)
    for item in made:
        click.echo(f"wrote {item.path} (mode {item.mode:04o})")
    click.echo(f"next: {NEXT_COMMAND}")


@main.group("server", invoke_without_command=True)
@_ENV_FILE
@click.pass_context
def server_group(ctx: click.Context, env_file: Path | None) -> None:
    """Run the control plane (HTTPS only) until SIGTERM or SIGINT; SIGHUP reloads its
    certificate. Exit 1 when it cannot start (TLS material, address), 2 when the
    configuration is refused."""
    if ctx.invoked_subcommand is not None:
        if env_file:
            raise click.UsageError(
                "--env-file runs the server; drop it for "
                f"`certctl server {ctx.invoked_subcommand}`."
            )
        return
    from certctl.server.main import run_server

    sys.exit(run_server(_db_settings(env_file)))


@server_group.command("init-tls")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write ca.pem, server.pem and server-key.pem (created if missing).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="A DNS name or IP address clients use to reach the server (repeatable); "
    "localhost, 127.0.0.1 and ::1 are always included.",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def server_init_tls(directory: Path, hosts: tuple[str, ...], force: bool) -> None:
    """Create a self-signed CA and a server certificate, for a first start without a PKI."""
    from certctl.server.tls import TLSBootstrapError, init_tls

    try:
        made = init_tls(directory.absolute(), hosts=hosts, force=force, now=datetime.now(UTC))
    except TLSBootstrapError as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(
            f"certctl: cannot write to {directory} ({exc.strerror or exc}); "
            "choose a directory you can write to.",
            err=True,
        )
        sys.exit(1)
    click.echo(f"CA certificate (for agents): {made.ca_path}")
    click.echo(f"server certificate + chain:  {made.cert_path}")
    click.echo(f"server key (mode 0600):      {made.key_path}")
    click.echo(f"valid until {made.not_after.isoformat()}")
    click.echo("# server env file")
    click.echo(f"CERTCTL_SERVER_TLS_CERT_PATH={made.cert_path}")
    click.echo(f"CERTCTL_SERVER_TLS_KEY_PATH={made.key_path}")
    click.echo("# agent env file")
    click.echo(f"CERTCTL_SERVER_CA_BUNDLE_PATH={made.ca_path}")


@main.group("issuer")
def issuer_group() -> None:
    """Issuers managed on the server host (CA keys never travel through the API)."""


@issuer_group.command("import-ca")
@click.option(
    "--cert",
    "cert_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM: the CA certificate, then any issuers above it.",
)
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM: the CA's private key (unencrypted; it is sealed on import).",
)
@click.option("--id", "issuer_id", required=True, help="Id of the new issuer, e.g. iss-corp.")
@click.option("--name", default=None, help="Display name (default: the CA's subject).")
@_ENV_FILE
def issuer_import_ca(
    *,
    cert_path: Path,
    key_path: Path,
    issuer_id: str,
    name: str | None,
    env_file: Path | None,
) -> None:
    """Create a LocalCA issuer that signs with an existing CA or sub-CA.

    Reads the server's configuration (database, data dir, encryption key), checks the CA
    (a CA certificate, matching key, valid now, chain in order), seals its key into the
    issuer's data dir and creates the issuer. Exit 0 on success, 1 when the CA or the id
    is refused, 2 when the configuration is.
    """
    import re

    from certctl.core.clock import SystemClock
    from certctl.core.model import ActorType
    from certctl.services import inventory
    from certctl.services.context import Actor
    from certctl.services.errors import ServiceError

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", issuer_id):
        click.echo(
            f"certctl: --id {issuer_id!r} is not an id; use letters, digits, '.', '_', '-'.",
            err=True,
        )
        sys.exit(1)
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        click.echo(f"certctl: cannot read {exc.filename} ({exc.strerror}); check it.", err=True)
        sys.exit(1)
    settings = _db_settings(env_file)
    actor = Actor(f"cli:{os.environ.get('USER', 'root')}", ActorType.USER)

    async def run(store: PostgresStore) -> str:
        from certctl.server.app import build_services

        services = build_services(settings, store, SystemClock())
        try:
            issuer = await inventory.import_local_ca(
                services, actor, issuer_id, name or issuer_id, cert_pem=cert_pem, key_pem=key_pem
            )
        except ServiceError as exc:
            return f"certctl: {exc.message}"
        return f"imported CA as issuer {issuer.id}; certificates may now use issuer_id={issuer.id}"

    outcome = _with_store(settings, run)
    failed = outcome.startswith("certctl:")
    click.echo(outcome, err=failed)
    sys.exit(1 if failed else 0)


@main.command("healthcheck")
@_ENV_FILE
@click.option(
    "--role",
    type=click.Choice([r.value for r in config.Role]),
    default=config.Role.SERVER.value,
    show_default=True,
    help="Probe the server (HTTPS /health and /ready) or this host's agent (its liveness file).",
)
@click.option("--url", help="Server URL; default https://localhost:$CERTCTL_SERVER_PORT.")
@click.option(
    "--cacert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA bundle the server's certificate chains to (default: the system trust store).",
)
@click.option(
    "--insecure-localhost",
    is_flag=True,
    help="Skip certificate checks; only for a loopback URL (the probe and server share a host).",
)
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds per request.")
def healthcheck(
    *,
    env_file: Path | None,
    role: str,
    url: str | None,
    cacert: Path | None,
    insecure_localhost: bool,
    timeout: float,
) -> None:
    """Exit 0 when healthy, 1 (with one line) when not, 2 when the probe's options are wrong.

    For container HEALTHCHECKs and init systems: needs no curl, pgrep or other OS package.
    """
    from certctl.agent.liveness import Unhealthy
    from certctl.healthcheck import ProbeRefused, check_agent, check_server, server_probe

    settings = _agent_settings(env_file)
    if role == config.Role.AGENT and (url or cacert or insecure_localhost):
        raise click.UsageError(
            "--url, --cacert and --insecure-localhost probe the server; drop them with "
            "--role agent (it reads the agent's liveness file)."
        )
    try:
        if role == config.Role.AGENT:
            verdict = check_agent(settings.effective_agent_state_dir, datetime.now(UTC))
        else:
            target = url or f"https://localhost:{settings.server_port}"
            probe = server_probe(
                target, cacert=cacert, insecure_localhost=insecure_localhost, timeout=timeout
            )
            verdict = check_server(probe)
    except ProbeRefused as exc:
        click.echo(f"certctl: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except Unhealthy as exc:
        click.echo(f"unhealthy: {exc}", err=True)
        sys.exit(1)
    click.echo(verdict)


@main.command("demo")
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=None,
    help="Stop this many seconds after the control plane is up (default: run until Ctrl-C).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="New or empty directory for everything the demo makes "
    "(default: a fresh one under ~/.local/share/certctl/demo).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8443,
    show_default=True,
    help="Loopback port of the control plane.",
)
def demo(duration: float | None, directory: Path | None, port: int) -> None:
    """Run a control plane, three agents and a seeded inventory on this machine, live.

    Starts `certctl server` (embedded PostgreSQL, HTTPS on 127.0.0.1) and three
    `certctl agent` processes, prints the API key, bootstrap token and CA path, creates
    about thirty certificates through the API and shows them being issued, deployed and
    renewed. Exit 0 when certificates were issued and deployed; 1 otherwise.
    """
    from certctl.demo import run_demo

    sys.exit(run_demo(duration=duration, directory=directory, port=port))
