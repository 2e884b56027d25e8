"""A Deployment job on this host: the newest version, its local key, the target's connector.

Everything that can go wrong before or during the deploy becomes a ``Failed`` report with
one reason an operator can act on (a host policy refusal, checked before the engine
writes anything, names the policy key to change); only the control plane refusing the agent itself
(``AgentRetired``, ``Unauthorized``) escapes. The deploy engine guarantees that a failed
deploy left the previous files in place (or says it did not, with ``RollbackFailed``), so
the report is the whole story.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
from cryptography import x509

from certctl.agent.control_plane import FATAL, ControlPlane, ControlPlaneError
from certctl.agent.keystore import KeyStore, KeyStoreError, spki_sha256
from certctl.agent.policy import HostPolicy
from certctl.agent.targets import connector_for
from certctl.config import Settings
from certctl.connectors.targets.base import TargetConfigInvalid
from certctl.core.model import JobStatus, VerificationStatus
from certctl.deploy import DeployError, Engine, Result, VerifyFailed
from certctl.logging import get_logger
from certctl.pki.errors import PKIError
from certctl.pki.keys import private_key_pem
from certctl.pki.pem import load_certificates
from certctl.protocol import AgentIdentity, CertificateMaterial, Verification, WorkItem

SKIPPED = Verification(status=VerificationStatus.SKIPPED)

_log = get_logger("certctl.agent")


@dataclass(frozen=True, slots=True)
class Report:
    """What the agent tells the control plane about one Deployment job."""

    status: JobStatus
    error: str | None = None
    verification: Verification | None = None


class _Failed(Exception):
    """Ends a deploy early with the reason (and verification) to report."""

    def __init__(self, reason: str, verification: Verification | None = None) -> None:
        super().__init__(reason)
        self.verification = verification


class Deployer:
    """Deploys work items, one at a time per target (``trio.Lock`` per target id)."""

    def __init__(
        self,
        settings: Settings,
        control_plane: ControlPlane,
        keys: KeyStore,
        engine: Engine,
        policy: HostPolicy,
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._control_plane = control_plane
        self._keys = keys
        self._engine = engine
        self._locks: dict[str, trio.Lock] = {}

    async def deploy(self, agent: AgentIdentity, item: WorkItem) -> Report:
        try:
            result = await self._apply(agent, item)
        except _Failed as exc:
            return Report(JobStatus.FAILED, str(exc), exc.verification)
        return Report(JobStatus.COMPLETED, verification=_verification(result))

    async def _apply(self, agent: AgentIdentity, item: WorkItem) -> Result:
        target = item.target
        if target is None:
            raise _Failed(
                f"Deployment job {item.job_id} names no target; recreate the job for a target."
            )
        try:
            material = await self._control_plane.certificate(agent, item.certificate_id)
        except FATAL:
            raise
        except ControlPlaneError as exc:
            raise _Failed(f"fetching certificate {item.certificate_id} failed: {exc}") from exc
        try:
            leaf = load_certificates(material.cert_pem.encode())[0]
            key = await trio.to_thread.run_sync(
                self._keys.find, item.certificate_id, leaf.public_key()
            )
            connector = connector_for(target, self._settings)
        except (PKIError, KeyStoreError, TargetConfigInvalid) as exc:
            raise _Failed(str(exc)) from exc
        if key is None:
            raise _Failed(_no_key(material, leaf))
        async with self._locks.setdefault(target.id, trio.Lock()):
            try:
                result = await connector.deploy(
                    self._engine,
                    material.cert_pem.encode(),
                    material.chain_pem.encode(),
                    private_key_pem(key),
                    guard=self._policy,
                )
            except VerifyFailed as exc:
                failure = Verification(status=VerificationStatus.FAILED, error=str(exc))
                raise _Failed(str(exc), failure) from exc
            except DeployError as exc:
                raise _Failed(str(exc)) from exc
        await self._forget_older_keys(item.certificate_id, leaf)
        return result

    async def _forget_older_keys(self, certificate_id: str, leaf: x509.Certificate) -> None:
        """After the deploy succeeded: a failure here only leaves spare keys behind."""
        try:
            await trio.to_thread.run_sync(
                self._keys.mark_deployed, certificate_id, leaf.public_key()
            )
        except KeyStoreError as exc:
            _log.warning("pruning old private keys failed", error=str(exc))


def _verification(result: Result) -> Verification:
    if result.verification is None:
        return SKIPPED
    return Verification(
        status=VerificationStatus.SUCCESS, fingerprint=result.verification.fingerprint
    )


def _no_key(material: CertificateMaterial, leaf: x509.Certificate) -> str:
    return (
        f"no private key on this agent for certificate {material.certificate_id} version "
        f"{material.version_id} (public key SHA-256 {spki_sha256(leaf.public_key())}): it was "
        "generated by another agent or deleted; renew the certificate so this agent "
        "generates a new key."
    )
