"""The sidecar harness itself: choosing a launcher, rendering configs, the test hooks.

The launchers run real servers only under ``-m sidecar``; what is checked here decides
*how* they run, and would otherwise be wrong silently (a Docker CLI with no engine
behind it, a template placeholder nobody fills in).
"""

from __future__ import annotations

import glob
import json
import socket
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import certctl
from certctl.testing import hookwrap
from certctl.testing.material import ScratchCA
from certctl.testing.sidecars import launchers, servers
from certctl.testing.sidecars.launchers import ContainerSidecar
from certctl.testing.sidecars.servers import SERVERS, Place, SidecarFailed


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A unix socket that answers each connection with the next canned reply."""
    path = tmp_path / "docker.sock"
    replies: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(replies.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, replies
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join()


@pytest.fixture
def docker_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIDECAR_LAUNCHER", raising=False)
    monkeypatch.setattr(launchers.shutil, "which", lambda name: f"/usr/bin/{name}")


@pytest.mark.usefixtures("docker_cli")
def test_an_engine_that_answers_ping_is_used(
    fake_engine: tuple[Path, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, replies = fake_engine
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    assert launchers.docker_engine_answers()
    replies.append(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    assert not launchers.docker_engine_answers()
    monkeypatch.setenv("SIDECAR_LAUNCHER", "local")  # forces local even with an engine
    replies.append(b"HTTP/1.1 200 OK\r\n\r\nOK")
    assert not launchers.docker_engine_answers()


@pytest.mark.usefixtures("docker_cli")
def test_a_cli_without_an_engine_means_local_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    assert not launchers.docker_engine_answers(timeout=0.5)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{closed.getsockname()[1]}")
        assert not launchers.docker_engine_answers(timeout=0.5)
    monkeypatch.setenv("DOCKER_HOST", "ssh://somewhere")
    assert not launchers.docker_engine_answers(timeout=0.5)


@pytest.mark.parametrize("name", list(SERVERS))
def test_every_template_renders_with_no_placeholder_left(name: str, tmp_path: Path) -> None:
    server = SERVERS[name]
    place = Place(
        conf=str(tmp_path / "conf"),
        run="/run/x",
        log="/run/x/log",
        certs=str(tmp_path / "certs"),
        listen="127.0.0.1",
        ports=dict.fromkeys(server.ports, 4443),
        user="u",
        modules="/m",
    )
    servers.render_templates(name, tmp_path / "conf", tmp_path / "certs", place)
    rendered = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert rendered
    for path in rendered:
        assert "{{" not in path.read_text(), path


def test_an_unknown_placeholder_is_an_error(tmp_path: Path) -> None:
    template = tmp_path / "x.conf"
    template.write_text("listen {{port_htps}};")
    with pytest.raises(SidecarFailed, match=r"unknown placeholder \{\{port_htps\}\}"):
        servers.substitute(template.read_text(), {"port_https": "1"}, template)


def test_hookwrap_runs_records_and_fails_once(tmp_path: Path) -> None:
    record, marker, out = tmp_path / "record", tmp_path / "marker", tmp_path / "out"
    argv = hookwrap.wrap(("touch", str(out)), str(record), fail_once=str(marker))
    first = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert (first.returncode, out.exists()) == (1, True)  # ran, then reported failure
    assert "failing this run on purpose" in first.stderr
    assert subprocess.run(argv, check=False).returncode == 0
    assert record.read_text().splitlines() == [f"touch {out}"] * 2
    failing = hookwrap.wrap(("false",), str(record))
    assert subprocess.run(failing, check=False).returncode == 1


@pytest.mark.parametrize("name", [n for n, s in SERVERS.items() if s.image is not None])
def test_container_definitions_lay_out_before_docker_is_touched(name: str, tmp_path: Path) -> None:
    """What a Docker machine would mount: rendered configs, and the connector's files at
    the same absolute paths inside the container as outside (Envoy's sds.json names them)."""
    version = ScratchCA("container layout").issue("localhost")
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    sidecar = ContainerSidecar(server=SERVERS[name], prefix=tmp_path, cert_dir=cert_dir)
    sidecar.render(sidecar.place)
    sidecar.layout(version.cert_pem, version.chain_pem, version.key_pem)
    assert sidecar.place.certs == str(cert_dir)
    assert all(path.parent == cert_dir and path.exists() for path in sidecar.cert_paths())
    rendered = "".join(p.read_text() for p in (tmp_path / "conf").iterdir())
    assert str(cert_dir) in rendered
    if name == "envoy":
        sds = json.loads((cert_dir / "sds.json").read_text())
        chain = sds["resources"][0]["tls_certificate"]["certificate_chain"]["filename"]
        assert Path(chain).read_bytes() == version.cert_pem + version.chain_pem


def test_every_template_ships_in_the_wheel() -> None:
    """The package-data globs of pyproject.toml, expanded as setuptools expands them
    (``glob`` with ``recursive=True``, files only), cover every template: the harness
    reads them with ``importlib.resources`` and must work from an installed wheel."""
    package = Path(certctl.__file__).parent
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["certctl"]
    shipped = {
        Path(found)
        for pattern in patterns
        for found in glob.glob(str(package / pattern), recursive=True)
        if Path(found).is_file()
    }
    templates = {p for p in Path(str(servers.TEMPLATES)).rglob("*") if p.is_file()}
    assert {p.parent.name for p in templates} >= set(SERVERS)
    assert templates <= shipped, sorted(map(str, templates - shipped))
