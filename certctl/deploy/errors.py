"""Deploy failures, each telling the caller what state the live files were left in.

The class is the contract: everything except ``RollbackFailed`` and ``RecoveryPending``
guarantees that the live files (bytes, modes, owners) are exactly as before the deploy, so
a caller can retry or report without looking at the disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from certctl.core.errors import CertctlError

if TYPE_CHECKING:
    from certctl.deploy.plan import Result


class DeployError(CertctlError):
    """Base class; ``result`` is set once the deploy got far enough to have one."""

    def __init__(self, message: str, result: Result | None = None) -> None:
        super().__init__(message)
        self.result = result


class PlanInvalid(DeployError):
    """The plan cannot be applied as written; nothing was touched."""


class PolicyRefused(PlanInvalid):
    """The host's policy does not allow a path, mode, owner or command of the plan; it was
    refused before anything was written or run. The message names the policy key."""


class ValidateFailed(DeployError):
    """The staged material or the target's validate command was rejected; live files intact."""


class ApplyFailed(DeployError):
    """An I/O step failed; live files intact (renamed ones were restored)."""


class ReloadFailed(DeployError):
    """The reload command failed; the previous files were restored and reloaded."""


class VerifyFailed(DeployError):
    """The endpoint did not serve the deployed leaf; the previous files were restored."""


class RollbackFailed(DeployError):
    """Restoring the previous files (or reloading them) failed: manual action is needed.

    The journal stays on disk so that ``Engine.recover`` can finish the job once the cause
    (full disk, permissions, broken reload command) is fixed; ``backup_paths`` lists the
    copies of the previous files for an operator who prefers to restore by hand.
    """

    def __init__(
        self,
        message: str,
        backup_paths: Mapping[str, str | None],
        journal: str | None,
        result: Result | None = None,
    ) -> None:
        super().__init__(message, result)
        self.backup_paths = dict(backup_paths)
        self.journal = journal


class RecoveryPending(DeployError):
    """An unfinished deploy journal covers these paths and others this plan does not lock."""
