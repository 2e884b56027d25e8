"""The agent's job loop against a test double of the control plane, deploying for real.

``ControlPlaneDouble`` is a TEST DOUBLE, not the control plane: an in-memory stand-in that
signs CSRs with a throwaway CA and hands out work, so these tests need no server. The
end-to-end tests over real HTTPS replace it once the server exists. Everything on the
agent's side is real: key generation, the key store, the File connector and the deploy
engine writing into a temporary directory, and the reload command as a subprocess.
"""

from __future__ import annotations

import itertools
import os
import signal
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from certctl import config
from certctl.agent.control_plane import AgentRetired, ControlPlaneError, Unauthorized
from certctl.agent.keystore import KeyStore
from certctl.agent.policy import HostPolicy
from certctl.agent.process import Mode, run
from certctl.agent.runner import AgentRunner
from certctl.core.model import JobStatus, JobType, KeyAlgorithm, VerificationStatus
from certctl.pki.ca import CertificateAuthority
from certctl.pki.csr import load_csr
from certctl.pki.keys import signature_hash
from certctl.pki.pem import certificates_pem, fingerprint_sha256, load_certificates
from certctl.protocol import (
    AgentIdentity,
    CertificateMaterial,
    HostFacts,
    IssuedVersion,
    TargetSpec,
    Verification,
    Work,
    WorkItem,
)
from certctl.testing.certs import intermediate_ca, root_ca
from certctl.testing.material import ScratchCA
from certctl.testing.policy import allowing

FACTS = HostFacts(hostname="web-01.example.test", os="linux", version="test")
IDENTITY = AgentIdentity(agent_id="agent-1", agent_key="agent-key-1")
NOW = datetime.now(UTC)

# Fails once each time the flag file exists (removing it), so the rollback's second reload
# succeeds: exactly a reload that choked on the new files.
RELOAD_SCRIPT = f"""#!{sys.executable}
import os, sys
flag = sys.argv[1]
if os.path.exists(flag):
    os.remove(flag)
    print("reload refused: bad certificate")
    sys.exit(1)
"""


@dataclass
class Report:
    status: JobStatus
    error: str | None
    verification: Verification | None


@dataclass
class ControlPlaneDouble:
    """TEST DOUBLE of ``ControlPlane`` (not the real control plane): keeps jobs in lists.

    AwaitingCSR items stay listed until their CSR arrives, as on the server; a submitted
    CSR is signed by a throwaway CA and queues one Deployment per mapped target. Errors to
    raise can be queued per call, and the virtual time of each ``work`` call is recorded.
    """

    ca: CertificateAuthority
    targets_of: dict[str, list[TargetSpec]] = field(default_factory=dict)
    queue: list[WorkItem] = field(default_factory=list)
    versions: dict[str, CertificateMaterial] = field(default_factory=dict)
    csrs: dict[str, str] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)
    registrations: list[tuple[str, str]] = field(default_factory=list)
    heartbeats: int = 0
    work_errors: list[ControlPlaneError] = field(default_factory=list)
    heartbeat_error: ControlPlaneError | None = None
    on_heartbeat: Any = None
    work_times: list[float] = field(default_factory=list)
    resumes: list[bool] = field(default_factory=list)
    waits: list[int] = field(default_factory=list)
    hold: int = 0  # seconds it holds a long poll; 0 = a server that answers at once
    queued: trio.Event = field(default_factory=trio.Event)
    on_work: Any = None
    held_polls: list[str] = field(default_factory=list)  # how each held poll ended
    csr_polls: dict[str, int] = field(default_factory=dict)  # job id: polls made before
    jobs: int = 0

    def _check(self, agent: AgentIdentity) -> None:
        if agent != IDENTITY:
            raise Unauthorized("unknown agent key", status=401, code="unauthorized")

    def _job_id(self) -> str:
        self.jobs += 1
        return f"job-{self.jobs}"

    def want_csr(self, certificate_id: str, common_name: str, sans: Sequence[str] = ()) -> str:
        job_id = self._job_id()
        self.queue.append(
            WorkItem(
                job_id=job_id,
                type=JobType.RENEWAL,
                status=JobStatus.AWAITING_CSR,
                certificate_id=certificate_id,
                common_name=common_name,
                sans=tuple(sans),
                key_algorithm=KeyAlgorithm.ECDSA,
                key_size=256,
                target=None,
            )
        )
        self.queued.set()
        return job_id

    def want_deploy(self, certificate_id: str, target: TargetSpec) -> str:
        job_id = self._job_id()
        version = self.versions[certificate_id]
        leaf = load_certificates(version.cert_pem.encode())[0]
        name = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        self.queue.append(
            WorkItem(
                job_id=job_id,
                type=JobType.DEPLOYMENT,
                status=JobStatus.RUNNING,
                certificate_id=certificate_id,
                common_name=str(name),
                sans=(),
                key_algorithm=KeyAlgorithm.ECDSA,
                key_size=256,
                target=target,
            )
        )
        self.queued.set()
        return job_id

    def publish(self, certificate_id: str, leaf: x509.Certificate, chain_pem: bytes) -> None:
        self.versions[certificate_id] = CertificateMaterial(
            certificate_id=certificate_id,
            version_id=f"ver-{len(self.versions) + 1}-{leaf.serial_number}",
            serial_number=str(leaf.serial_number),
            fingerprint_sha256=fingerprint_sha256(leaf),
            not_after=leaf.not_valid_after_utc,
            cert_pem=certificates_pem([leaf]).decode(),
            chain_pem=chain_pem.decode(),
        )

    async def register(self, bootstrap_token: str, name: str, facts: HostFacts) -> AgentIdentity:
        if bootstrap_token != "bootstrap-token":
            raise Unauthorized("invalid bootstrap token", status=401)
        self.registrations.append((name, facts.hostname))
        return IDENTITY

    async def heartbeat(self, agent: AgentIdentity, facts: HostFacts) -> None:
        self._check(agent)
        self.heartbeats += 1
        if self.on_heartbeat is not None:
            self.on_heartbeat()
        if self.heartbeat_error is not None:
            raise self.heartbeat_error

    async def work(
        self,
        agent: AgentIdentity,
        *,
        resume: bool = False,
        wait: int = 0,
        facts: HostFacts | None = None,
    ) -> Work:
        self._check(agent)
        self.resumes.append(resume)
        self.waits.append(wait)
        self.work_times.append(trio.current_time())
        if self.work_errors:
            raise self.work_errors.pop(0)
        if self.on_work is not None:
            self.on_work()
        granted = min(wait, self.hold)
        if granted and not self.queue:
            try:
                with trio.move_on_after(granted) as timer:
                    await self.queued.wait()
            except trio.Cancelled:
                self.held_polls.append("cancelled")
                raise
            self.held_polls.append("timed out" if timer.cancelled_caught else "woken")
        self.queued = trio.Event()
        items = list(self.queue)
        self.queue = [i for i in self.queue if i.status is JobStatus.AWAITING_CSR]
        return Work(count=len(items), jobs=tuple(items), wait_seconds=granted)

    async def submit_csr(self, agent: AgentIdentity, job_id: str, csr_pem: str) -> IssuedVersion:
        self._check(agent)
        item = next(i for i in self.queue if i.job_id == job_id)
        self.queue.remove(item)
        self.csrs[job_id] = csr_pem
        self.csr_polls[job_id] = len(self.work_times)
        request = load_csr(csr_pem.encode())
        names = x509.SubjectAlternativeName(request.sans.general_names())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, item.common_name)]))
            .issuer_name(self.ca.certificate.subject)
            .public_key(request.public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(hours=1))
            .not_valid_after(NOW + timedelta(days=30))
            .add_extension(names, critical=False)
            .sign(self.ca.key, signature_hash(self.ca.key))
        )
        self.publish(item.certificate_id, leaf, self.ca.chain_pem)
        for target in self.targets_of.get(item.certificate_id, []):
            self.want_deploy(item.certificate_id, target)
        version = self.versions[item.certificate_id]
        return IssuedVersion(
            id=version.version_id,
            serial_number=version.serial_number,
            fingerprint_sha256=version.fingerprint_sha256,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
        )

    async def certificate(self, agent: AgentIdentity, certificate_id: str) -> CertificateMaterial:
        self._check(agent)
        return self.versions[certificate_id]

    async def report_status(
        self,
        agent: AgentIdentity,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        verification: Verification | None = None,
    ) -> None:
        self._check(agent)
        self.reports[job_id] = Report(status, error, verification)

    async def targets(self, agent: AgentIdentity) -> Sequence[TargetSpec]:
        self._check(agent)
        return [t for targets in self.targets_of.values() for t in targets]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return intermediate_ca(root_ca(NOW), NOW)


@pytest.fixture
def double(ca: CertificateAuthority) -> ControlPlaneDouble:
    return ControlPlaneDouble(ca)


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    return config.load(
        {
            "CERTCTL_AGENT_STATE_DIR": str(tmp_path / "state"),
            "CERTCTL_AGENT_BOOTSTRAP_TOKEN": "bootstrap-token",
            "CERTCTL_AGENT_NAME": "web-01",
        }
    )


@pytest.fixture
def live(tmp_path: Path) -> Path:
    directory = tmp_path / "live"
    directory.mkdir()
    return directory


def file_target(live: Path, **extra: Any) -> TargetSpec:
    config = {
        "cert_path": str(live / "cert.pem"),
        "key_path": str(live / "key.pem"),
        "chain_path": str(live / "chain.pem"),
    }
    return TargetSpec(id="target-1", name="files", type="File", config=config | extra)


def policy_for(settings: config.Settings) -> HostPolicy:
    """Writes in the test's ``live`` directory; ``true``, ``false`` and the test's reload
    script, with any arguments."""
    root = settings.effective_agent_state_dir.parent
    programs = ("true", "false", str(root / "reload.py"))
    return allowing([root / "live"], prefixes=[[p] for p in programs])


def agent(settings: config.Settings, double: ControlPlaneDouble) -> AgentRunner:
    return AgentRunner(
        settings, double, facts=FACTS, random=lambda: 0.0, policy=policy_for(settings)
    )


async def test_a_csr_job_stores_the_key_and_submits_the_names(
    settings: config.Settings, double: ControlPlaneDouble
) -> None:
    job = double.want_csr("cert-1", "www.example.test", ["www.example.test", "10.0.0.5"])

    outcomes = await agent(settings, double).run_once()

    assert [(o.job_id, o.ok) for o in outcomes] == [(job, True)]
    assert double.registrations == [("web-01", FACTS.hostname)]
    assert double.heartbeats == 1
    request = load_csr(double.csrs[job].encode())
    assert request.common_name == "www.example.test"
    assert request.sans.values() == ("www.example.test", "10.0.0.5")
    stored = KeyStore(settings.effective_agent_state_dir / "keys").find(
        "cert-1", request.public_key
    )
    assert stored is not None
    (key_file,) = (settings.effective_agent_state_dir / "keys" / "cert-1").glob("*.pem")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_a_csr_without_sans_names_the_common_name(
    settings: config.Settings, double: ControlPlaneDouble
) -> None:
    job = double.want_csr("cert-1", "api.example.test")
    await agent(settings, double).run_once()
    assert load_csr(double.csrs[job].encode()).sans.values() == ("api.example.test",)


async def test_the_identity_is_registered_once_and_reused(
    settings: config.Settings, double: ControlPlaneDouble
) -> None:
    await agent(settings, double).run_once()
    await agent(settings, double).run_once()
    assert len(double.registrations) == 1
    assert double.heartbeats == 2


async def test_a_deployment_writes_the_files_and_reports_completed(
    settings: config.Settings, double: ControlPlaneDouble, live: Path
) -> None:
    double.targets_of["cert-1"] = [file_target(live)]
    double.want_csr("cert-1", "www.example.test", ["www.example.test"])
    runner = agent(settings, double)
    await runner.run_once()  # CSR: the double issues and queues the deployment

    outcomes = await runner.run_once()

    (deploy,) = outcomes
    assert deploy.ok, deploy.message
    report = double.reports[deploy.job_id]
    assert report == Report(
        JobStatus.COMPLETED, None, Verification(status=VerificationStatus.SKIPPED)
    )
    version = double.versions["cert-1"]
    assert (live / "cert.pem").read_text() == version.cert_pem
    assert (live / "chain.pem").read_text() == version.chain_pem
    assert stat.S_IMODE((live / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((live / "cert.pem").stat().st_mode) == 0o644


async def test_a_missing_key_fails_the_job_with_the_reason(
    settings: config.Settings, double: ControlPlaneDouble, live: Path
) -> None:
    """A certificate whose key this agent never generated (made by another host)."""
    elsewhere = ScratchCA("elsewhere").issue("www.example.test")
    double.publish("cert-1", elsewhere.leaf(), elsewhere.chain_pem)
    job = double.want_deploy("cert-1", file_target(live))

    (outcome,) = await agent(settings, double).run_once()

    assert not outcome.ok
    report = double.reports[job]
    assert report.status is JobStatus.FAILED
    assert report.error is not None
    assert "no private key on this agent for certificate cert-1" in report.error
    assert "renew the certificate" in report.error
    assert not any(live.iterdir())


async def test_a_failing_reload_reports_the_failure_and_keeps_the_old_files(
    settings: config.Settings, double: ControlPlaneDouble, live: Path, tmp_path: Path
) -> None:
    script, flag = tmp_path / "reload.py", tmp_path / "fail-next-reload"
    script.write_text(RELOAD_SCRIPT)
    script.chmod(0o755)
    target = file_target(live, reload_command=[str(script), str(flag)])
    double.targets_of["cert-1"] = [target]
    runner = agent(settings, double)
    double.want_csr("cert-1", "www.example.test", ["www.example.test"])
    await runner.run_once()
    (first,) = await runner.run_once()
    assert first.ok, first.message
    before = {p.name: p.read_bytes() for p in live.iterdir()}

    double.want_csr("cert-1", "www.example.test", ["www.example.test"])
    await runner.run_once()  # the renewal: new key, new version, new deployment
    flag.touch()
    (second,) = await runner.run_once()

    assert not second.ok
    report = double.reports[second.job_id]
    assert report.status is JobStatus.FAILED
    assert report.error is not None
    assert "reload command failed" in report.error
    assert "reload refused: bad certificate" in report.error
    assert "previous files are in place" in report.error
    assert {p.name: p.read_bytes() for p in live.iterdir() if "certctl-bak" not in p.name} == (
        before
    )


async def test_a_redeploy_of_the_current_version_survives_a_failed_renewal(
    settings: config.Settings, double: ControlPlaneDouble, live: Path
) -> None:
    """A renewal that made a key but never got a certificate leaves the deployed key
    findable: keys are looked up by the leaf's public key, not "the newest key"."""
    target = file_target(live)
    double.targets_of["cert-1"] = [target]
    runner = agent(settings, double)
    double.want_csr("cert-1", "www.example.test", ["www.example.test"])
    await runner.run_once()
    await runner.run_once()
    for _ in range(4):  # renewals whose CSR is refused
        job = double.want_csr("cert-1", "www.example.test", ["www.example.test"])
        double.submit_csr = _refuse  # type: ignore[method-assign]
        await runner.run_once()
        double.queue = [i for i in double.queue if i.job_id != job]

    keys = settings.effective_agent_state_dir / "keys" / "cert-1"
    assert len(list(keys.glob("*.pem"))) == 3  # the deployed key and the two newest

    job = double.want_deploy("cert-1", target)
    await runner.run_once()

    assert double.reports[job].status is JobStatus.COMPLETED


async def _refuse(agent: AgentIdentity, job_id: str, csr_pem: str) -> IssuedVersion:
    raise ControlPlaneError("CSR refused: key not allowed", status=422, code="unprocessable")


async def test_retirement_stops_the_agent(
    settings: config.Settings, double: ControlPlaneDouble, autojump_clock: trio.abc.Clock
) -> None:
    double.heartbeat_error = AgentRetired("agent-1 was retired", status=410, code="gone")
    with pytest.raises(AgentRetired, match="was retired"):
        await agent(settings, double).start()


async def test_poll_errors_back_off_exponentially_and_reset_after_success(
    settings: config.Settings, double: ControlPlaneDouble, autojump_clock: trio.abc.Clock
) -> None:
    """Poll interval 30 s, cap 5 min, jitter pinned to none: 30, 60, 120, 240, 300, 300,
    then a success waits the plain interval and the next failure starts over at 30."""
    down = ControlPlaneError("cannot reach the control plane")
    double.work_errors = [down] * 6
    runner = agent(settings, double)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.start)
        while len(double.work_times) < 8:
            await trio.sleep(1)
        double.work_errors = [down]
        while len(double.work_times) < 10:
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    # Polls resume claimed deploys until one succeeds (the 7th), and never after.
    assert double.resumes[:7] == [True] * 7
    assert not any(double.resumes[7:])
    times = double.work_times
    gaps = [round(b - a) for a, b in itertools.pairwise(times)]
    assert gaps[:9] == [30, 60, 120, 240, 300, 300, 30, 30, 30]


async def test_jitter_only_shortens_the_wait(
    settings: config.Settings, double: ControlPlaneDouble, autojump_clock: trio.abc.Clock
) -> None:
    double.work_errors = [ControlPlaneError("down")] * 3
    runner = AgentRunner(
        settings, double, facts=FACTS, random=lambda: 0.999, policy=policy_for(settings)
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.start)
        while len(double.work_times) < 4:
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    times = double.work_times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, full in zip(gaps, [30, 60, 120], strict=True):
        assert full / 2 <= gap < full * 0.51


async def test_an_idle_agent_long_polls_back_to_back_and_sends_no_heartbeats(
    settings: config.Settings, double: ControlPlaneDouble, autojump_clock: trio.abc.Clock
) -> None:
    double.hold = 3600  # the server holds up to what the agent asks
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent(settings, double).start)
        while len(double.work_times) < 12:
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert set(double.waits) == {55}  # CERTCTL_AGENT_POLL_WAIT's default
    gaps = [round(b - a) for a, b in itertools.pairwise(double.work_times)]
    assert set(gaps) == {55}  # the next poll goes out as the last one ends
    assert double.heartbeats <= 1  # the first, sent before any poll was held
    assert double.held_polls[:11] == ["timed out"] * 11


async def test_work_arriving_during_a_long_poll_is_handled_when_it_arrives(
    settings: config.Settings, double: ControlPlaneDouble, autojump_clock: trio.abc.Clock
) -> None:
    double.hold = 3600
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent(settings, double).start)
        while len(double.work_times) < 2:
            await trio.sleep(1)
        await trio.sleep(20)  # 20 s into the second poll
        job_id = double.want_csr("cert-1", "www.example.com", ["www.example.com"])
        while job_id not in double.csrs:
            await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert double.held_polls[:2] == ["timed out", "woken"]
    assert double.csr_polls[job_id] == 2  # answered by the poll that was waiting


async def test_against_a_server_that_answers_at_once_it_short_polls_and_heartbeats(
    settings: config.Settings, double: ControlPlaneDouble, autojump_clock: trio.abc.Clock
) -> None:
    double.hold = 0  # an older server, or one at its cap of waiting polls
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent(settings, double).start)
        while len(double.work_times) < 5:
            await trio.sleep(1)
        double.hold = 3600  # the server holds polls again: the agent goes back to them
        while len(double.work_times) < 8:
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    gaps = [round(b - a) for a, b in itertools.pairwise(double.work_times)]
    assert gaps[:4] == [30, 30, 30, 30]  # CERTCTL_AGENT_POLL_INTERVAL
    assert gaps[5:7] == [55, 55]


def test_sigterm_cancels_a_waiting_long_poll(
    settings: config.Settings, double: ControlPlaneDouble
) -> None:
    double.hold = 3600
    polls: list[int] = []

    def second_poll_gets_sigterm() -> None:
        polls.append(1)
        if len(polls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    double.on_work = second_poll_gets_sigterm
    double.want_csr("cert-1", "www.example.com")  # the first poll answers at once
    assert run(settings, Mode.RUN, out=print, err=print, control_plane=double) == 0
    assert double.held_polls == ["cancelled"]


async def test_an_empty_bootstrap_token_without_identity_names_the_variable(
    tmp_path: Path, double: ControlPlaneDouble
) -> None:
    settings = config.load({"CERTCTL_AGENT_STATE_DIR": str(tmp_path / "state")})
    with pytest.raises(config.ConfigError, match="CERTCTL_AGENT_BOOTSTRAP_TOKEN is empty"):
        await agent(settings, double).run_once()


async def test_a_refused_bootstrap_token_is_a_configuration_error(
    tmp_path: Path, double: ControlPlaneDouble
) -> None:
    settings = config.load(
        {
            "CERTCTL_AGENT_STATE_DIR": str(tmp_path / "state"),
            "CERTCTL_AGENT_BOOTSTRAP_TOKEN": "stale",
        }
    )
    with pytest.raises(config.ConfigError) as refused:
        await agent(settings, double).run_once()
    assert refused.value.variable == "CERTCTL_AGENT_BOOTSTRAP_TOKEN"


async def test_an_identity_for_another_server_is_refused(
    settings: config.Settings, double: ControlPlaneDouble, tmp_path: Path
) -> None:
    await agent(settings, double).run_once()
    moved = config.load(
        {
            "CERTCTL_AGENT_STATE_DIR": str(tmp_path / "state"),
            "CERTCTL_SERVER_URL": "https://other.example.test:8443",
        }
    )
    with pytest.raises(config.ConfigError, match="registered with https://localhost:8443"):
        await agent(moved, double).run_once()


async def test_dry_run_checks_each_target_and_writes_nothing(
    settings: config.Settings, double: ControlPlaneDouble, live: Path, tmp_path: Path
) -> None:
    await agent(settings, double).run_once()  # registers
    double.targets_of["cert-1"] = [
        file_target(live, validate_command="true"),
        TargetSpec(id="target-2", name="broken", type="File", config={"cert_path": "relative.pem"}),
        file_target(live, validate_command="false").model_copy(update={"id": "target-3"}),
    ]
    state_before = sorted(p.name for p in (tmp_path / "state").rglob("*"))

    checks = await agent(settings, double).dry_run()

    assert [(c.target.id, c.ok) for c in checks] == [
        ("target-1", True),
        ("target-2", False),
        ("target-3", False),
    ]
    assert "ran: true" in checks[0].message
    assert "cert_path" in checks[1].message
    assert "validate" in checks[2].message or "false" in checks[2].message
    assert not any(live.iterdir())
    assert sorted(p.name for p in (tmp_path / "state").rglob("*")) == state_before
    assert double.heartbeats == 1  # the dry run claims nothing and does not heartbeat


async def test_dry_run_needs_a_registered_agent(
    settings: config.Settings, double: ControlPlaneDouble
) -> None:
    with pytest.raises(config.ConfigError, match="certctl agent --once"):
        await agent(settings, double).dry_run()
    assert not double.registrations


# -- the process: exit codes ------------------------------------------------------------


def test_retired_agent_exits_0_with_a_message(
    settings: config.Settings, double: ControlPlaneDouble
) -> None:
    double.heartbeat_error = AgentRetired("agent-1 was retired", status=410, code="gone")
    out: list[str] = []
    err: list[str] = []
    assert run(settings, Mode.RUN, out=out.append, err=err.append, control_plane=double) == 0
    (line,) = err
    assert "retired this agent" in line
    assert "not restarted" in line


def test_sigterm_stops_the_agent_with_status_0(
    settings: config.Settings, double: ControlPlaneDouble
) -> None:
    double.on_heartbeat = lambda: os.kill(os.getpid(), signal.SIGTERM)
    err: list[str] = []
    assert run(settings, Mode.RUN, out=print, err=err.append, control_plane=double) == 0
    assert err == []
    assert double.heartbeats == 1


def test_once_exits_1_when_a_job_failed(
    settings: config.Settings, double: ControlPlaneDouble, live: Path
) -> None:
    elsewhere = ScratchCA("elsewhere").issue("www.example.test")
    double.publish("cert-1", elsewhere.leaf(), elsewhere.chain_pem)
    double.want_deploy("cert-1", file_target(live))
    out: list[str] = []
    assert run(settings, Mode.ONCE, out=out.append, err=out.append, control_plane=double) == 1
    (line,) = out
    assert line.startswith("FAILED Deployment job job-1: no private key")


def test_a_refused_agent_key_exits_1_naming_the_state_file(
    settings: config.Settings, double: ControlPlaneDouble
) -> None:
    double.heartbeat_error = Unauthorized("unknown agent key", status=401)
    err: list[str] = []
    assert run(settings, Mode.ONCE, out=err.append, err=err.append, control_plane=double) == 1
    (line,) = err
    assert "refused this agent's key" in line
    assert "agent.json" in line


def test_a_configuration_refusal_exits_2(tmp_path: Path, double: ControlPlaneDouble) -> None:
    settings = config.load({"CERTCTL_AGENT_STATE_DIR": str(tmp_path / "state")})
    err: list[str] = []
    assert run(settings, Mode.ONCE, out=err.append, err=err.append, control_plane=double) == 2
    (line,) = err
    assert line.startswith("certctl: CERTCTL_AGENT_BOOTSTRAP_TOKEN is empty")
