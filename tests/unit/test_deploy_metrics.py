"""Each deploy counter moves on the path it describes, read back from the registry."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from cryptography import x509

from certctl.connectors.targets.base import Material
from certctl.deploy import (
    Engine,
    File,
    FileRole,
    Handshake,
    Plan,
    ReloadFailed,
    RollbackFailed,
    ValidateFailed,
    VerifyFailed,
)
from certctl.deploy.metrics import REGISTRY
from certctl.testing.faults import ScriptedRunner
from certctl.testing.material import ScratchCA

ISSUER = ScratchCA()
V1, V2 = ISSUER.issue("m1.example"), ISSUER.issue("m2.example")
VALIDATE, RELOAD = ("validate-config",), ("reload-service",)
_types = itertools.count()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Deployer:
    """An engine over a fresh directory with its own target_type label, so counts are exact."""

    def __init__(self, tmp_path: Path) -> None:
        self.site = tmp_path / "site"
        self.site.mkdir()
        self.runner = ScriptedRunner()
        self.engine = Engine(str(tmp_path / "state"), runner=self.runner)
        self.target = f"metrics-{next(_types)}"

    def plan(self, material: Material) -> Plan:
        return Plan(
            files=(
                File(str(self.site / "cert.pem"), material.fullchain, FileRole.FULLCHAIN),
                File(str(self.site / "key.pem"), material.key_pem, FileRole.KEY),
            ),
            validate=VALIDATE,
            reload=RELOAD,
            target_type=self.target,
        )

    def count(self, name: str, **labels: str) -> float:
        return value(name, target_type=self.target, **labels)


@pytest.fixture
def deployer(tmp_path: Path) -> Deployer:
    return Deployer(tmp_path)


def test_success_counts_an_attempt_and_its_duration(deployer: Deployer) -> None:
    deployer.engine.apply(deployer.plan(V1))
    assert deployer.count("certctl_deploy_attempts_total", result="success") == 1
    assert deployer.count("certctl_deploy_attempts_total", result="failure") == 0
    assert deployer.count("certctl_deploy_duration_seconds_count") == 1
    assert deployer.count("certctl_deploy_duration_seconds_sum") > 0


def test_an_identical_redeploy_counts_a_skip(deployer: Deployer) -> None:
    deployer.engine.apply(deployer.plan(V1))
    deployer.engine.apply(deployer.plan(V1))
    assert deployer.count("certctl_deploy_idempotent_skip_total") == 1
    assert deployer.count("certctl_deploy_attempts_total", result="success") == 2


def test_validate_failures_count_the_command_and_the_material_check(deployer: Deployer) -> None:
    deployer.runner.fail(VALIDATE, times=1)
    with pytest.raises(ValidateFailed):
        deployer.engine.apply(deployer.plan(V1))
    mismatched = Material(V1.cert_pem, V1.chain_pem, V2.key_pem)
    with pytest.raises(ValidateFailed):
        deployer.engine.apply(deployer.plan(mismatched))
    assert deployer.count("certctl_deploy_validate_failures_total") == 2
    assert deployer.count("certctl_deploy_attempts_total", result="failure") == 2
    assert deployer.count("certctl_deploy_rollback_total", outcome="restored") == 0


def test_a_reload_failure_counts_the_failure_and_a_restored_rollback(deployer: Deployer) -> None:
    deployer.engine.apply(deployer.plan(V1))
    deployer.runner.fail(RELOAD, times=1)
    with pytest.raises(ReloadFailed):
        deployer.engine.apply(deployer.plan(V2))
    assert deployer.count("certctl_deploy_reload_failures_total") == 1
    assert deployer.count("certctl_deploy_rollback_total", outcome="restored") == 1
    assert deployer.count("certctl_deploy_rollback_total", outcome="also_failed") == 0


def test_a_failed_rollback_counts_also_failed(deployer: Deployer) -> None:
    deployer.engine.apply(deployer.plan(V1))
    deployer.runner.fail(RELOAD)
    with pytest.raises(RollbackFailed):
        deployer.engine.apply(deployer.plan(V2))
    assert deployer.count("certctl_deploy_reload_failures_total") == 1
    assert deployer.count("certctl_deploy_rollback_total", outcome="also_failed") == 1
    assert deployer.count("certctl_deploy_rollback_total", outcome="restored") == 0


def test_a_verify_failure_counts_and_rolls_back(deployer: Deployer) -> None:
    deployer.engine.apply(deployer.plan(V1))

    def wrong_certificate(leaf: x509.Certificate) -> Handshake:
        raise VerifyFailed("served SHA-256 0000, deployed ffff")

    with pytest.raises(VerifyFailed, match="previous files are in place and reloaded"):
        deployer.engine.apply(deployer.plan(V2), wrong_certificate)
    assert deployer.count("certctl_deploy_post_verify_failures_total") == 1
    assert deployer.count("certctl_deploy_rollback_total", outcome="restored") == 1
    assert (deployer.site / "key.pem").read_bytes() == V1.key_pem
