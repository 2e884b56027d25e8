"""Atomic multi-file deploys with crash recovery, rollback and TLS verification.

Imports only ``certctl.core`` and ``certctl.pki``; connectors build ``Plan`` objects and
the agent runs them through one ``Engine`` (``recover()`` at start, ``deploy()`` per job).
"""

from certctl.deploy.apply import Engine
from certctl.deploy.errors import (
    ApplyFailed,
    DeployError,
    PlanInvalid,
    PolicyRefused,
    RecoveryPending,
    ReloadFailed,
    RollbackFailed,
    ValidateFailed,
    VerifyFailed,
)
from certctl.deploy.fs import FileSystem, OsFileSystem, Stat, write_atomic
from certctl.deploy.plan import File, FileDefaults, FileRole, Handshake, Plan, Result
from certctl.deploy.recover import Recovery
from certctl.deploy.run import (
    Command,
    CommandFailed,
    CommandInvalid,
    Runner,
    SubprocessRunner,
    parse_command,
)
from certctl.deploy.verify import Endpoint, TLSVerifier, Verifier

__all__ = [
    "ApplyFailed",
    "Command",
    "CommandFailed",
    "CommandInvalid",
    "DeployError",
    "Endpoint",
    "Engine",
    "File",
    "FileDefaults",
    "FileRole",
    "FileSystem",
    "Handshake",
    "OsFileSystem",
    "Plan",
    "PlanInvalid",
    "PolicyRefused",
    "Recovery",
    "RecoveryPending",
    "ReloadFailed",
    "Result",
    "RollbackFailed",
    "Runner",
    "Stat",
    "SubprocessRunner",
    "TLSVerifier",
    "ValidateFailed",
    "Verifier",
    "VerifyFailed",
    "parse_command",
    "write_atomic",
]
