"""``certctl healthcheck``: the probe images, compose files and init systems run.

The server probe is HTTPS or nothing. The earlier server image probed
``http://localhost:8443/health`` against an HTTPS-only listener, so every bare ``docker
run`` container stayed unhealthy forever; here an ``http://`` URL is refused before any
connection, and a port that answers in plaintext is reported as such. Trust comes from
``--cacert`` (the CA bundle mounted next to the server's certificate) or, only for a
loopback URL, from ``--insecure-localhost``: the probe then talks to the process serving
the certificate on the same host, and a typo cannot turn it into an unverified call across
the network.

A healthy server answers ``/health`` (the process serves) and ``/ready`` (database,
migrations, background loops, audit buffer) with 200; anything else is one line naming the
endpoint and the server's own reason.
"""

from __future__ import annotations

import ipaddress
import ssl
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from certctl.agent import liveness
from certctl.agent.liveness import Unhealthy

LOOPBACK_NAMES = frozenset({"localhost"})
# Substrings OpenSSL uses when the peer's first bytes are not a TLS record (an HTTP
# response, say): the handshake failed because the port speaks plaintext.
_PLAINTEXT_SIGNS = (
    "WRONG_VERSION_NUMBER",
    "record layer failure",
    "PACKET_LENGTH_TOO_LONG",
    "http request",
)


class ProbeRefused(Exception):
    """The probe's own arguments are wrong (exit 2): the message names the option and fix."""


@dataclass(frozen=True, slots=True)
class ServerProbe:
    """Where to probe and what to trust; build with ``server_probe`` for the checks."""

    url: str
    context: ssl.SSLContext
    timeout: float


def server_probe(
    url: str, *, cacert: Path | None, insecure_localhost: bool, timeout: float
) -> ServerProbe:
    """Check the URL and trust options, or ``ProbeRefused``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ProbeRefused(
            f"--url {url!r} is not an https:// URL; the certctl server speaks only HTTPS, "
            "so probe https://HOST:PORT."
        )
    if cacert is not None and insecure_localhost:
        raise ProbeRefused("--cacert and --insecure-localhost exclude each other; choose one.")
    if insecure_localhost:
        if not _loopback(parts.hostname):
            raise ProbeRefused(
                f"--insecure-localhost skips certificate checks, so it is allowed only for a "
                f"loopback URL, not {parts.hostname}; pass --cacert with the server's CA bundle."
            )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        try:
            context = ssl.create_default_context(cafile=cacert)
        except (OSError, ssl.SSLError) as exc:
            raise ProbeRefused(
                f"--cacert {cacert} cannot be loaded ({exc}); pass the PEM CA bundle the "
                "server's certificate chains to."
            ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return ServerProbe(url.rstrip("/"), context, timeout)


def check_server(probe: ServerProbe) -> str:
    """The healthy verdict as one line, or ``Unhealthy`` saying what failed."""
    with httpx.Client(verify=probe.context, timeout=probe.timeout, trust_env=False) as client:
        for path in ("/health", "/ready"):
            answer = _get(client, probe.url + path)
            if answer.status_code != httpx.codes.OK:
                raise Unhealthy(
                    f"{probe.url}{path} answered {answer.status_code}: {_reason(answer)}"
                )
    return f"healthy: {probe.url} (/health and /ready answered 200)"


def check_agent(state_dir: Path, now: datetime) -> str:
    """The agent's verdict from its liveness record in ``state_dir``, or ``Unhealthy``."""
    record = liveness.read(state_dir)
    return liveness.judge(record, now, running=liveness.pid_running(record.pid))


def _get(client: httpx.Client, url: str) -> httpx.Response:
    try:
        return client.get(url)
    except httpx.ConnectError as exc:
        text = str(exc)
        if any(sign.lower() in text.lower() for sign in _PLAINTEXT_SIGNS):
            raise Unhealthy(
                f"{url} answered without TLS: that port speaks plaintext, and a certctl "
                "server speaks only HTTPS; point the probe at the server's HTTPS port."
            ) from None
        if "CERTIFICATE_VERIFY_FAILED" in text:
            raise Unhealthy(
                f"{url} presented a certificate the probe does not trust ({text}); pass "
                "--cacert with the server's CA bundle."
            ) from None
        raise Unhealthy(f"{url} refused the connection ({text}): is the server running?") from None
    except httpx.TimeoutException:
        raise Unhealthy(f"{url} did not answer within {client.timeout.read} s.") from None
    except httpx.HTTPError as exc:
        raise Unhealthy(f"{url} failed ({exc}).") from None


def _reason(answer: httpx.Response) -> str:
    """The server's own message (``{error, message}``), else the start of the body; on one
    line and bounded whatever the peer sent."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    text = (
        body["message"]
        if isinstance(body, dict) and isinstance(body.get("message"), str)
        else answer.text
    )
    return " ".join(str(text).split())[:200] or "(empty body)"


def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
