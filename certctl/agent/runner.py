"""The agent process: recover, register, then heartbeat and poll until retired or stopped.

Two loops run in one nursery. The poll claims work and runs every item of one answer
concurrently (deploys to one target are serialized by the ``Deployer``) before it polls
again, so an AwaitingCSR job that is listed on every poll is never handled twice at once.
By default each poll is a long poll (``CERTCTL_AGENT_POLL_WAIT``): the server holds it
until work appears, and it is the agent's heartbeat too, so an idle agent makes one
request a minute. Against a server that answers at once (older, or at its cap of waiting
polls) the agent short-polls on ``CERTCTL_AGENT_POLL_INTERVAL`` and the heartbeat loop
keeps it Online. Poll errors back off exponentially with jitter, so a fleet does not
hammer a control plane that is coming back up.

Shutdown is cancellation. A deploy in progress is not cancellable (the engine runs it to
the end in a worker thread, and its journal makes a crash safe anyway); the report of a
deploy that finished is shielded for a few seconds so the control plane learns what
really happened on the host. A CSR job abandoned midway leaves only an unused key, which
pruning removes later.
"""

from __future__ import annotations

import os
import platform
import random as _random
import shlex
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import NoReturn

import trio

from certctl import __version__
from certctl.agent import issuance, liveness
from certctl.agent.connection import check_server_url
from certctl.agent.control_plane import FATAL, ControlPlane, ControlPlaneError, Unauthorized
from certctl.agent.deployment import Deployer, Report
from certctl.agent.keystore import KeyStore, KeyStoreError
from certctl.agent.policy import HostPolicy, load_policy
from certctl.agent.state import (
    StateUnusable,
    StoredIdentity,
    load_identity,
    open_state_dir,
    save_identity,
)
from certctl.agent.targets import connector_for
from certctl.config import ConfigError, Settings
from certctl.connectors.targets.base import TargetConfigInvalid, sample_material
from certctl.core.backoff import Backoff
from certctl.core.clock import Clock, SystemClock
from certctl.core.model import JobStatus, JobType
from certctl.core.text import report_text
from certctl.deploy import Engine, PolicyRefused, RollbackFailed, ValidateFailed
from certctl.logging import get_logger
from certctl.pki.errors import PKIError
from certctl.protocol import AgentIdentity, HostFacts, TargetSpec, WorkItem

BACKOFF_CAP = 300.0
BACKOFF_JITTER = 0.5
# How long a finished deploy's report may hold up shutdown; systemd's stop timeout is 90 s.
REPORT_GRACE = 10.0

_log = get_logger("certctl.agent")


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How one work item ended on this host (``--once`` prints these)."""

    job_id: str
    type: JobType
    ok: bool
    message: str


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One target's dry run (``--dry-run`` prints these)."""

    target: TargetSpec
    ok: bool
    message: str


def host_facts() -> HostFacts:
    return HostFacts(
        hostname=socket.gethostname(),
        os=platform.system().lower(),
        architecture=platform.machine(),
        version=__version__,
    )


class AgentRunner:
    """One agent: its state directory, key store, deploy engine and control plane."""

    def __init__(
        self,
        settings: Settings,
        control_plane: ControlPlane,
        *,
        facts: HostFacts | None = None,
        random: Callable[[], float] = _random.random,
        policy: HostPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``random`` jitters the poll backoff; tests pass a constant. ``policy`` is the
        host policy, loaded from the settings when not given (``ConfigError`` if unusable).
        ``clock`` stamps the liveness record (virtual time in the fleet simulator)."""
        self._settings = settings
        self._clock = clock or SystemClock()
        self._policy = policy if policy is not None else load_policy(settings)
        self._control_plane = control_plane
        self._facts = facts or host_facts()
        self._random = random
        self._server_url = check_server_url(settings.server_url)
        self._state_dir = settings.effective_agent_state_dir
        self._keys = KeyStore(self._state_dir / "keys")
        self._poll_interval = settings.agent_poll_interval.total_seconds()
        self._backoff = Backoff(
            initial=self._poll_interval,
            cap=max(BACKOFF_CAP, self._poll_interval),
            jitter=BACKOFF_JITTER,
        )
        self._stopped_by: ControlPlaneError | None = None
        # When the last poll the server held answered; ``None`` while short-polling.
        self._long_polled: datetime | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    async def start(self) -> NoReturn:
        """Run until cancelled; raises ``AgentRetired`` (or ``Unauthorized``) to stop."""
        deployer = await self._prepare()
        identity = await self._identity(retry=True)
        async with trio.open_nursery() as nursery:
            stop = nursery.cancel_scope
            nursery.start_soon(self._until_fatal, partial(self._heartbeats, identity), stop)
            nursery.start_soon(self._until_fatal, partial(self._polls, identity, deployer), stop)
        assert self._stopped_by is not None  # the loops end only through _until_fatal
        raise self._stopped_by

    async def run_once(self) -> list[JobOutcome]:
        """One heartbeat and one poll, every item handled; control-plane errors raise."""
        deployer = await self._prepare()
        identity = await self._identity(retry=False)
        await self._control_plane.heartbeat(identity, self._facts)
        answer = await self._control_plane.work(identity, resume=True)
        return await self._handle_all(identity, deployer, answer.jobs)

    async def dry_run(self) -> list[TargetCheck]:
        """Validate each of this agent's targets with throwaway material; changes nothing.

        Needs a registered agent (registering would write the state directory).
        """
        identity = load_identity(self._state_dir, self._server_url)
        if identity is None:
            raise StateUnusable(
                f"no agent is registered in {self._state_dir}; run `certctl agent --once` to "
                "register before a dry run."
            )
        targets = await self._control_plane.targets(identity)
        return [await self._check(target) for target in targets]

    # -- start-up ---------------------------------------------------------------------

    async def _prepare(self) -> Deployer:
        """Repair deploys a crash interrupted before any new one can touch their files."""
        open_state_dir(self._state_dir)
        engine = Engine(str(self._state_dir / "deploy"))
        try:
            recoveries = await trio.to_thread.run_sync(engine.recover)
        except RollbackFailed as exc:
            _log.error("deploy recovery needs manual action", error=str(exc))
        else:
            for recovery in recoveries:
                _log.warning(
                    "recovered an interrupted deploy",
                    journal=recovery.journal,
                    rolled_forward=recovery.forward,
                    restored=list(recovery.restored),
                    removed=list(recovery.removed),
                    reload_error=recovery.reload_error,
                    warnings=list(recovery.warnings),
                )
        return Deployer(self._settings, self._control_plane, self._keys, engine, self._policy)

    async def _identity(self, *, retry: bool) -> AgentIdentity:
        """The stored identity, or a new registration with the bootstrap token."""
        stored = load_identity(self._state_dir, self._server_url)
        if stored is not None:
            return stored
        token = self._settings.agent_bootstrap_token
        if not token:
            raise ConfigError(
                "CERTCTL_AGENT_BOOTSTRAP_TOKEN",
                f"CERTCTL_AGENT_BOOTSTRAP_TOKEN is empty and {self._state_dir} holds no agent "
                "identity; set it to the control plane's bootstrap token to register.",
            )
        name = self._settings.agent_name or self._facts.hostname
        failures = 0
        while True:
            try:
                identity = await self._control_plane.register(token, name, self._facts)
                break
            except ControlPlaneError as exc:
                refusal = _registration_refusal(exc, name)
                if refusal is not None:
                    raise refusal from exc
                if not retry or not _transient(exc):
                    raise
                failures += 1
                await self._pause("registering failed", exc, failures)
        save_identity(self._state_dir, StoredIdentity(identity, self._server_url))
        _log.info("registered with the control plane", agent_id=identity.agent_id, name=name)
        return identity

    # -- loops --------------------------------------------------------------------------

    async def _until_fatal(
        self, loop: Callable[[], Awaitable[NoReturn]], stop: trio.CancelScope
    ) -> None:
        """Run a loop until the control plane refuses this agent, then stop the others."""
        try:
            await loop()
        except FATAL as exc:
            self._stopped_by = exc
            stop.cancel()

    async def _heartbeats(self, identity: AgentIdentity) -> NoReturn:
        """A heartbeat per interval while the agent short-polls; while the server holds
        its polls, those are the heartbeat and this loop only records liveness."""
        interval = self._settings.agent_heartbeat_interval
        started = self._clock.now()
        answered: datetime | None = None
        while True:
            error = ""
            if self._long_polled is not None:
                answered = self._long_polled
            else:
                try:
                    await self._control_plane.heartbeat(identity, self._facts)
                    answered = self._clock.now()
                except FATAL:
                    raise
                except ControlPlaneError as exc:
                    error = str(exc)
                    _log.warning("heartbeat failed", error=error, status=exc.status)
            await self._record_liveness(interval, started, answered, error)
            await trio.sleep(interval.total_seconds())

    async def _record_liveness(
        self, interval: timedelta, started: datetime, answered: datetime | None, error: str
    ) -> None:
        """What ``certctl healthcheck --role agent`` reads; a failure to write it is logged
        (the probe then reports the loop as stuck), never fatal to the agent."""
        record = liveness.Liveness(
            os.getpid(), interval, started, self._clock.now(), answered, error
        )
        try:
            await trio.to_thread.run_sync(liveness.record, self._state_dir, record)
        except OSError as exc:
            _log.error("cannot write the liveness record", error=str(exc))

    async def _polls(self, identity: AgentIdentity, deployer: Deployer) -> NoReturn:
        """Long polls back to back while the server holds them (each answer is handled,
        then the next poll goes out at once); otherwise, and after work that failed, a
        pause of the poll interval. A server that does not hold polls (older, or at its
        cap) is asked again each time, so the agent returns to long polls by itself."""
        failures = 0
        resume = True  # first poll: finish deploys a previous run of this agent claimed
        wait = int(self._settings.agent_poll_wait.total_seconds())
        while True:
            try:
                answer = await self._control_plane.work(
                    identity, resume=resume, wait=wait, facts=self._facts
                )
            except FATAL:
                raise
            except ControlPlaneError as exc:
                self._long_polled = None
                failures += 1
                await self._pause("polling for work failed", exc, failures)
                continue
            failures = 0
            resume = False
            self._long_polled = self._clock.now() if answer.wait_seconds > 0 else None
            outcomes = await self._handle_all(identity, deployer, answer.jobs)
            if self._long_polled is None or not all(o.ok for o in outcomes):
                await trio.sleep(self._poll_interval)

    async def _pause(self, what: str, exc: ControlPlaneError, failures: int) -> None:
        delay = self._backoff.delay(failures, self._random)
        _log.warning(
            what, error=str(exc), status=exc.status, failures=failures, retry_in=round(delay, 1)
        )
        await trio.sleep(delay)

    # -- work items ---------------------------------------------------------------------

    async def _handle_all(
        self, identity: AgentIdentity, deployer: Deployer, items: Sequence[WorkItem]
    ) -> list[JobOutcome]:
        """Every item concurrently; a fatal refusal stops the rest and is raised alone."""
        outcomes: list[JobOutcome] = []
        fatal: list[ControlPlaneError] = []

        async def one(item: WorkItem, scope: trio.CancelScope) -> None:
            try:
                outcomes.append(await self._handle(identity, deployer, item))
            except FATAL as exc:
                fatal.append(exc)
                scope.cancel()

        async with trio.open_nursery() as nursery:
            for item in items:
                nursery.start_soon(one, item, nursery.cancel_scope)
        if fatal:
            raise fatal[0]
        return outcomes

    async def _handle(
        self, identity: AgentIdentity, deployer: Deployer, item: WorkItem
    ) -> JobOutcome:
        log = _log.bind(job_id=item.job_id, job_type=item.type.value)
        if item.status is JobStatus.AWAITING_CSR:
            outcome = await self._issue(identity, item)
        elif item.type is JobType.DEPLOYMENT:
            outcome = await self._deploy(identity, deployer, item)
        else:
            outcome = JobOutcome(
                item.job_id, item.type, False, f"{item.status} {item.type} jobs are not for agents"
            )
        if outcome.ok:
            log.info("job done", result=outcome.message)
        else:
            log.error("job failed", error=outcome.message)
        return outcome

    async def _issue(self, identity: AgentIdentity, item: WorkItem) -> JobOutcome:
        try:
            key = await trio.to_thread.run_sync(issuance.new_key, item)
            await trio.to_thread.run_sync(self._keys.store, item.certificate_id, key)
            csr = issuance.csr_pem(item, key)
            version = await self._control_plane.submit_csr(identity, item.job_id, csr)
        except FATAL:
            raise
        except (PKIError, KeyStoreError, ControlPlaneError) as exc:
            return JobOutcome(item.job_id, item.type, False, f"CSR not submitted: {exc}")
        return JobOutcome(
            item.job_id,
            item.type,
            True,
            f"issued version {version.id} (serial {version.serial_number}, not after "
            f"{version.not_after.isoformat()})",
        )

    async def _deploy(
        self, identity: AgentIdentity, deployer: Deployer, item: WorkItem
    ) -> JobOutcome:
        report = await deployer.deploy(identity, item)
        await self._report(identity, item, report)
        if report.error is not None:
            return JobOutcome(item.job_id, item.type, False, report.error)
        verified = report.verification.status if report.verification else "not run"
        return JobOutcome(item.job_id, item.type, True, f"deployed; verification {verified}")

    async def _report(self, identity: AgentIdentity, item: WorkItem, report: Report) -> None:
        """Shielded: the deploy happened, so the control plane should hear of it even
        while the agent shuts down; bounded so shutdown is not held up for long.

        Error texts (command output, often several lines) go through ``report_text``,
        which escapes control characters and bounds the length, so the control plane can
        always take the report. Should it still refuse the body (an older server with
        stricter rules), the status goes again with a one-line reason, so that a job
        never stays Running because its error could not be stored.
        """
        verification = report.verification
        if verification is not None and verification.error is not None:
            verification = verification.model_copy(
                update={"error": report_text(verification.error)}
            )
        error = None if report.error is None else report_text(report.error)
        with trio.CancelScope(shield=True), trio.move_on_after(REPORT_GRACE):
            try:
                try:
                    await self._control_plane.report_status(
                        identity, item.job_id, report.status, error=error, verification=verification
                    )
                except ControlPlaneError as exc:
                    if exc.status not in (400, 422) or isinstance(exc, FATAL):
                        raise
                    _log.warning(
                        "the control plane refused the report; sending it plainly",
                        job_id=item.job_id,
                        error=str(exc),
                    )
                    await self._control_plane.report_status(
                        identity,
                        item.job_id,
                        report.status,
                        error=None if error is None else _plain(error),
                    )
            except FATAL:
                raise
            except ControlPlaneError as exc:
                _log.warning(
                    "reporting the job status failed; the control plane will time the job out",
                    job_id=item.job_id,
                    error=str(exc),
                )

    # -- dry run ------------------------------------------------------------------------

    async def _check(self, target: TargetSpec) -> TargetCheck:
        try:
            connector = connector_for(target, self._settings)
        except TargetConfigInvalid as exc:
            return TargetCheck(target, False, str(exc))
        name = connector.config.post_deploy_verify.server_name or "localhost"
        material = await trio.to_thread.run_sync(sample_material, name)
        try:
            dry = await connector.validate_only(
                material.cert_pem, material.chain_pem, material.key_pem, guard=self._policy
            )
        except (ValidateFailed, PolicyRefused) as exc:
            return TargetCheck(target, False, str(exc))
        ran = "; ".join(shlex.join(check.argv) for check in dry.checks) or "no commands"
        notes = "".join(f" Note: {note}" for note in dry.notes)
        return TargetCheck(target, True, f"dry run passed (ran: {ran}).{notes}")


def _plain(error: str) -> str:
    """A reason any control plane accepts: printable ASCII on one line, short."""
    text = " | ".join(line.strip() for line in error.splitlines() if line.strip())
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:1000]


def _transient(exc: ControlPlaneError) -> bool:
    """Worth retrying: the server was unreachable, overloaded or failing."""
    return exc.status is None or exc.status >= 500 or exc.status == 429


def _registration_refusal(exc: ControlPlaneError, name: str) -> ConfigError | None:
    """The configuration fix for a refused registration, if the operator has one to make."""
    if isinstance(exc, Unauthorized):
        return ConfigError(
            "CERTCTL_AGENT_BOOTSTRAP_TOKEN",
            f"the control plane refused CERTCTL_AGENT_BOOTSTRAP_TOKEN ({exc}); set it to the "
            "server's current bootstrap token.",
        )
    if exc.status == 409:
        return ConfigError(
            "CERTCTL_AGENT_NAME",
            f"an agent named {name!r} is already registered ({exc}); set CERTCTL_AGENT_NAME to "
            "an unused name or retire the old agent.",
        )
    return None
