"""What every target connector is: a validated config that turns material into a plan.

A connector never writes a live file itself: ``plan`` describes the files and hooks and
the deploy engine applies them all-or-nothing, so every target gets the same locking,
journal, rollback and verification. ``deploy`` is that plan plus the target's verifier;
``validate_only`` is the dry run.

Config validation and defaults live in the pydantic models and run on every path that
builds a connector (``from_config``): the earlier implementation applied its defaults and
command checks only in a method the agent never called.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from certctl.connectors.targets.fields import Address, Duration, HostPort
from certctl.core.backoff import Backoff
from certctl.core.errors import CertctlError
from certctl.core.model import TargetType
from certctl.deploy import (
    Command,
    CommandFailed,
    Endpoint,
    Engine,
    File,
    FileDefaults,
    Plan,
    Result,
    Runner,
    SubprocessRunner,
    TLSVerifier,
    ValidateFailed,
)
from certctl.deploy.material import check_material
from certctl.pki.errors import PKIError
from certctl.pki.keys import (
    ECDSA_P256,
    SigningKey,
    generate_key,
    private_key_pem,
    signature_hash,
)
from certctl.pki.pem import load_certificates

DEFAULT_COMMAND_TIMEOUT = "60s"


class TargetConfigInvalid(CertctlError, ValueError):
    """A target config that does not validate; the message names the field and the fix."""


class Schema(BaseModel):
    """Strict: an unknown field or a value of the wrong type is an error, never coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class VerifySettings(Schema):
    """``post_deploy_verify``: the handshake that proves the server serves the new leaf.

    On by default for every connector; ``server_name`` defaults to the leaf's first DNS
    name so a server with several virtual hosts answers with the deployed one.
    """

    enabled: bool = True
    endpoint: Address | None = None
    server_name: str | None = None
    timeout: Duration = Field(default="10s", validate_default=True)
    attempts: int = Field(default=3, ge=1, le=20)
    backoff: Duration = Field(default="1s", validate_default=True)
    max_backoff: Duration = Field(default="16s", validate_default=True)

    @model_validator(mode="after")
    def _cap_covers_backoff(self) -> Self:
        if self.max_backoff < self.backoff:
            raise ValueError("max_backoff is shorter than backoff; raise max_backoff")
        return self


class TargetConfig(Schema):
    """Fields every target type has."""

    post_deploy_verify: VerifySettings = VerifySettings()
    backup_retention: int = Field(default=0, ge=-1)
    command_timeout: Duration = Field(default=DEFAULT_COMMAND_TIMEOUT, validate_default=True)


@dataclass(frozen=True, slots=True)
class Material:
    """One certificate version as PEM: the leaf, its chain (may be empty), its key."""

    cert_pem: bytes
    chain_pem: bytes
    key_pem: bytes

    @staticmethod
    def _block(pem: bytes) -> bytes:
        """Exactly one newline at the end, so concatenations have no blank lines and the
        same material always makes the same bytes (idempotent redeploys)."""
        stripped = pem.strip()
        return stripped + b"\n" if stripped else b""

    @property
    def cert(self) -> bytes:
        return self._block(self.cert_pem)

    @property
    def chain(self) -> bytes:
        return self._block(self.chain_pem)

    @property
    def key(self) -> bytes:
        return self._block(self.key_pem)

    @property
    def fullchain(self) -> bytes:
        return self.cert + self.chain

    @property
    def combined(self) -> bytes:
        return self.cert + self.chain + self.key

    def leaf(self) -> x509.Certificate:
        try:
            return load_certificates(self.cert_pem)[0]
        except PKIError as exc:
            raise ValidateFailed(f"the certificate to deploy is not usable: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Check:
    """One command the dry run ran, and what it printed."""

    argv: Command
    output: str


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a deploy would write, and the checks the staged material passed."""

    plan: Plan
    checks: tuple[Check, ...]
    notes: tuple[str, ...]


class Guard(Protocol):
    """The host's say over a plan (the agent's host policy): it raises ``PolicyRefused``
    naming the policy key, before a file is written or a command run."""

    def check(self, target_type: TargetType, plan: Plan) -> None:
        """Refuse ``plan`` unless this host allows its paths, modes, owners and commands."""

    def check_probe(self, target_type: TargetType, argv: Command) -> None:
        """Refuse the dry run's probe unless its program is one this target may run."""


def sample_material(
    server_name: str, key: SigningKey | None = None, now: datetime | None = None
) -> Material:
    """A self-signed leaf for ``server_name`` (ECDSA P-256 unless ``key``), valid for a
    day: what a dry run stages when the operator has no certificate at hand yet."""
    key = key or generate_key(ECDSA_P256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)])
    start = (now or datetime.now(UTC)) - timedelta(minutes=5)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]), critical=False)
        .sign(key, signature_hash(key))
    )
    return Material(leaf.public_bytes(Encoding.PEM), b"", private_key_pem(key))


def first_existing_user(candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` that exists on this host (the service's usual account)."""
    for name in candidates:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def service_defaults(mode: int, owners: Sequence[str]) -> FileDefaults:
    """New files get ``mode`` and, when one of ``owners`` exists, that user and its group."""
    owner = first_existing_user(owners)
    return FileDefaults(mode=mode, owner=owner, group=owner)


C = TypeVar("C", bound=TargetConfig)


class Connector(ABC, Generic[C]):
    """A target type: its schema, its files, its hooks and its verify endpoint.

    Subclasses set ``target_type``, ``schema`` and ``default_endpoint`` and implement
    ``files``; the hooks, defaults and dry-run probe have overridable defaults.
    """

    target_type: ClassVar[TargetType]
    schema: ClassVar[type[TargetConfig]]
    default_endpoint: ClassVar[HostPort] = HostPort("127.0.0.1", 443)
    # Values for fields the config leaves out, where the type has a conventional layout.
    config_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, config: C) -> None:
        self.config = config

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> Self:
        """Validate ``raw`` (parsed JSON) and apply the defaults; raises ``TargetConfigInvalid``."""
        try:
            config = cls.schema.model_validate({**cls.config_defaults, **raw})
        except ValidationError as exc:
            raise TargetConfigInvalid(describe(cls.target_type, exc)) from None
        return cls(config)  # type: ignore[arg-type]  # schema is C by construction

    @abstractmethod
    def files(self, material: Material) -> tuple[File, ...]:
        """The destinations, with roles so the engine checks the material before writing."""

    def defaults(self) -> FileDefaults:
        return FileDefaults()

    def validate_command(self) -> Command | None:
        return None

    def reload_command(self) -> Command | None:
        return None

    def probe(self, staged: Mapping[str, str], workdir: str) -> Command | None:
        """argv that makes the server's own binary load the staged files (dry run only).

        ``staged`` maps each live path to its staged copy; a probe config may be written
        into ``workdir``. ``None`` when the server has no such test mode.
        """
        return None

    def plan(self, cert_pem: bytes, chain_pem: bytes, key_pem: bytes) -> Plan:
        config = self.config
        return Plan(
            files=self.files(Material(cert_pem, chain_pem, key_pem)),
            defaults=self.defaults(),
            validate=self.validate_command(),
            reload=self.reload_command(),
            hook_timeout=config.command_timeout,
            backup_retention=config.backup_retention,
            target_type=self.target_type.value,
        )

    def endpoint(self, leaf: x509.Certificate) -> Endpoint | None:
        """Where the deployed ``leaf`` must be served; ``None`` if verification is off."""
        verify = self.config.post_deploy_verify
        if not verify.enabled:
            return None
        address = verify.endpoint or self.default_endpoint
        return Endpoint(address.host, address.port, verify.server_name or _first_name(leaf))

    def verifier(self, leaf: x509.Certificate) -> TLSVerifier | None:
        endpoint = self.endpoint(leaf)
        if endpoint is None:
            return None
        verify = self.config.post_deploy_verify
        return TLSVerifier(
            endpoint,
            attempts=verify.attempts,
            backoff=Backoff(initial=verify.backoff, cap=verify.max_backoff),
            timeout=verify.timeout,
        )

    async def deploy(
        self,
        engine: Engine,
        cert_pem: bytes,
        chain_pem: bytes,
        key_pem: bytes,
        *,
        guard: Guard | None = None,
    ) -> Result:
        """Apply the plan through ``engine`` and verify the endpoint; see ``certctl.deploy``.

        ``guard`` sees the plan first: the agent always passes its host policy.
        """
        plan = self.plan(cert_pem, chain_pem, key_pem)
        if guard is not None:
            guard.check(self.target_type, plan)
        leaf = Material(cert_pem, chain_pem, key_pem).leaf()
        return await engine.deploy(plan, self.verifier(leaf))

    async def validate_only(
        self,
        cert_pem: bytes,
        chain_pem: bytes,
        key_pem: bytes,
        *,
        runner: Runner | None = None,
        now: datetime | None = None,
        guard: Guard | None = None,
    ) -> DryRun:
        """The dry run: stage the planned files in a private temporary directory, check
        them in-process, have the server's binary load them (``probe``), then run the
        target's validate command. No live file is written and nothing is reloaded.

        Raises ``ValidateFailed`` with the failing command's output, or ``PolicyRefused``
        when ``guard`` would refuse the real deploy or the probe (before any command).
        """
        plan = self.plan(cert_pem, chain_pem, key_pem)
        if guard is not None:
            guard.check(self.target_type, plan)
        run = (runner or SubprocessRunner()).run
        checks: list[Check] = []
        notes: list[str] = []
        with tempfile.TemporaryDirectory(prefix="certctl-dry-run-") as workdir:
            staged = _stage(plan.files, workdir)
            check_material(
                [_moved(f, staged[f.path]) for f in plan.files], now or datetime.now(UTC)
            )
            probe = self.probe(staged, workdir)
            if guard is not None and probe is not None:
                guard.check_probe(self.target_type, probe)
            commands = [c for c in (probe, plan.validate) if c is not None]
            if probe is not None and shutil.which(probe[0]) is None:
                commands.remove(probe)
                notes.append(
                    f"{probe[0]} is not installed here, so the staged files were checked "
                    "in-process only."
                )
            for argv in commands:
                try:
                    output = await trio.to_thread.run_sync(run, argv, plan.hook_timeout)
                except CommandFailed as exc:
                    raise ValidateFailed(f"dry run: {exc}; nothing was changed.") from exc
                checks.append(Check(argv, output))
        return DryRun(plan=plan, checks=tuple(checks), notes=tuple(notes))


def write_probe(workdir: str, name: str, text: str) -> str:
    """Write a dry-run probe config into the dry run's private directory; returns its path."""
    path = os.path.join(workdir, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _first_name(leaf: x509.Certificate) -> str | None:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    dns = names.get_values_for_type(x509.DNSName)
    return dns[0].removeprefix("*.") if dns else None


def _stage(files: Sequence[File], workdir: str) -> dict[str, str]:
    """Copy each planned file into ``workdir`` under a unique name; live path → copy."""
    staged = {}
    for index, item in enumerate(files):
        path = os.path.join(workdir, f"{index}-{os.path.basename(item.path)}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(item.data)
        staged[item.path] = path
    return staged


def _moved(item: File, path: str) -> File:
    return File(path=path, data=item.data, role=item.role)


def describe(target_type: TargetType, error: ValidationError) -> str:
    """Pydantic's first error as one sentence: which field, what is wrong, how to fix it."""
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"])
    kind = first["type"]
    where = f"{target_type.value} target: {field}" if field else f"{target_type.value} target"
    if kind == "missing":
        return f"{where} is required; set it."
    if kind == "extra_forbidden":
        return f"{where} is not a known field; remove it or fix its spelling."
    message = first["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return f"{where}: {message}."
    return f"{where}: {message[:1].lower()}{message[1:]} (got {first['input']!r}); fix the value."
