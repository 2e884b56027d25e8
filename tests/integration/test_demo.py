"""``certctl demo`` as a user runs it: a child process, judged only from outside.

While it runs, the credentials it prints must reach the API over HTTPS (trusting only the
CA path it printed), the inventory must become Active with deployments Completed, and the
deployed files must hold the certificate the API says is current. At the end it must stop
by itself (``--duration``) with status 0 and a summary. No sidecar: NGINX is used when
installed and left out otherwise, and either way the demo must pass.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from certctl.testing.processes import free_port
from certctl.testing.server import trusting

pytestmark = pytest.mark.process  # a minute of processes: run by `nox -s integration`

DURATION = 40
CURL = re.compile(
    r'curl --cacert (\S+) -H "Authorization: Bearer (\S+)" (https://\S+)/api/v1/certificates'
)
_T = TypeVar("_T")


def _wait_for(probe: Callable[[], _T | None], timeout: float, what: str, log: list[str]) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n" + "".join(log)
        time.sleep(0.5)


def _first_pem(path: Path) -> str:
    text = path.read_text()
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return text[:end].strip()


def test_demo_issues_deploys_and_stops_with_status_0(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "certctl", "demo", "--duration", str(DURATION),
         "--dir", str(directory), "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    output: list[str] = []
    assert demo.stdout is not None
    reader = threading.Thread(target=lambda: output.extend(demo.stdout or ()), daemon=True)
    reader.start()
    try:
        curl = _wait_for(
            lambda: next((m for line in output if (m := CURL.search(line))), None),
            60,
            "curl line",
            output,
        )
        ca, key, url = curl.group(1), curl.group(2), curl.group(3)
        assert Path(ca) == directory / "tls" / "ca.pem"
        with httpx.Client(
            base_url=url,
            verify=trusting(Path(ca)),
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as api:

            def get(path: str, **params: Any) -> Any:
                response = api.get(path, params=params)
                assert response.status_code == 200, response.text
                return response.json()

            def deployed() -> list[dict[str, Any]]:
                jobs = get("/api/v1/jobs", type="Deployment", status="Completed", limit=1000)
                return list(jobs["items"])

            _wait_for(deployed, DURATION, "completed deployment", output)
            # Long polls deliver the first deployment while the demo may still be seeding.
            certificates = _wait_for(
                lambda: (
                    (c := get("/api/v1/certificates", limit=1000)["items"])
                    and (c if len(c) >= 30 else None)
                ),
                DURATION,
                "30 seeded certificates",
                output,
            )
            assert {c["environment"] for c in certificates} >= {"production", "staging", "dev"}
            assert len({c["owner_id"] for c in certificates}) == 3
            _wait_for(
                lambda: any(c["status"] == "Active" for c in get("/api/v1/certificates")["items"]),
                20,
                "Active certificate",
                output,
            )
            job = next(j for j in deployed() if j["target_id"])
            target = get(f"/api/v1/targets/{job['target_id']}")
            served = _first_pem(Path(target["config"]["cert_path"]))
            assert served.startswith("-----BEGIN CERTIFICATE-----")
            assert Path(target["config"]["cert_path"]).is_relative_to(directory / "targets")
            newest = get(f"/api/v1/certificates/{job['certificate_id']}/export/pem")["cert_pem"]
            versions = get(f"/api/v1/certificates/{job['certificate_id']}/versions")["items"]
            assert served == newest.strip() or len(versions) > 1  # a renewal may be under way
        curl_bin = shutil.which("curl")
        if curl_bin is not None:
            argv = shlex.split(curl.group(0))
            fetched = subprocess.run(
                [curl_bin, "--silent", "--fail", *argv[1:]],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert fetched.returncode == 0, fetched.stderr
            assert '"items"' in fetched.stdout
            assert "www.example.com" in fetched.stdout
        status = demo.wait(timeout=DURATION + 60)
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=60)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
        reader.join(timeout=10)
        demo.stdout.close()
    log = "".join(output)
    assert status == 0, log
    assert re.search(r"certctl demo: deployments: [1-9]\d* Completed, 0 Failed", log), log
    assert re.search(r"certctl demo: certificates: \d+ \(.*Active", log), log
    assert "certctl: " not in log, log  # no refusal or problem line
