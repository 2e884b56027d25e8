"""Where and how the agent connects: an https:// URL and a TLS 1.3 client context.

Both checks run before the first request and raise ``ConfigError`` naming the variable, so
a wrong URL or an unusable CA bundle is one line at start (exit 2) instead of a connection
error in a retry loop. The control plane is HTTPS-only: an ``http://`` URL would send the
bootstrap token and the agent key in clear text, so it is refused, not downgraded.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

from certctl.config import ConfigError
from certctl.logging import get_logger
from certctl.pki.errors import PEMError
from certctl.pki.pem import pem_blocks

URL_VAR = "CERTCTL_SERVER_URL"
CA_BUNDLE_VAR = "CERTCTL_SERVER_CA_BUNDLE_PATH"
INSECURE_VAR = "CERTCTL_SERVER_TLS_INSECURE_SKIP_VERIFY"
_EXAMPLE = "https://certctl.example.com:8443"


class ServerURLRefused(ConfigError):
    """``CERTCTL_SERVER_URL`` is not an https:// URL with a host."""

    def __init__(self, message: str) -> None:
        super().__init__(URL_VAR, message)


class CABundleUnusable(ConfigError):
    """``CERTCTL_SERVER_CA_BUNDLE_PATH`` cannot be read or holds no usable certificate."""

    def __init__(self, message: str) -> None:
        super().__init__(CA_BUNDLE_VAR, message)


def check_server_url(url: str) -> str:
    """``url`` without a trailing slash, or ``ServerURLRefused`` saying how to fix it."""
    text = url.strip()
    if not text:
        raise ServerURLRefused(
            f"{URL_VAR} is empty; set it to the control plane's URL, such as {_EXAMPLE}."
        )
    # Checked before parsing: urlsplit reads "host:8443" as scheme "host".
    if "://" not in text:
        raise ServerURLRefused(
            f"{URL_VAR}={text!r} is missing a scheme; write it as https://{text}."
        )
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError as exc:
        raise ServerURLRefused(
            f"{URL_VAR}={text!r} is not a valid URL ({exc}); write it like {_EXAMPLE}."
        ) from None
    scheme = parts.scheme.lower()
    if scheme == "http":
        secure = "https" + text[len(parts.scheme) :]
        raise ServerURLRefused(
            f"{URL_VAR}={text!r} uses plaintext http://, but the control plane is HTTPS-only; "
            f"change it to {secure}."
        )
    if scheme != "https":
        raise ServerURLRefused(
            f"{URL_VAR}={text!r} uses unsupported scheme {parts.scheme!r}; use an https:// URL."
        )
    if not parts.hostname:
        raise ServerURLRefused(f"{URL_VAR}={text!r} has no host; write it like {_EXAMPLE}.")
    return text.rstrip("/")


def client_ssl_context(ca_bundle: Path | None, *, insecure: bool) -> ssl.SSLContext:
    """TLS 1.3 or nothing; trusts only ``ca_bundle`` when given, else the system store.

    ``insecure`` turns verification off and says so loudly on every start: it exists for
    a first test against a self-signed server and must never survive into production.
    """
    cadata = None if ca_bundle is None else _ca_pem(ca_bundle)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cadata)
    except ssl.SSLError as exc:
        raise CABundleUnusable(
            f"{CA_BUNDLE_VAR}={ca_bundle} holds a certificate that does not load ({exc.reason}); "
            "replace the file with the CA's PEM certificate."
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        get_logger("certctl.agent").warning(
            f"TLS certificate verification of the control plane is disabled ({INSECURE_VAR}="
            "true): anyone on the network path can impersonate it; never use this in "
            "production.",
        )
    return context


def _ca_pem(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CABundleUnusable(
            f"{CA_BUNDLE_VAR}={path} cannot be read ({exc.strerror}); point it at the PEM file "
            "of the CA that signed the control plane's certificate."
        ) from None
    try:
        blocks = pem_blocks(data, "CERTIFICATE")
    except PEMError:  # over the size limit, so not a CA bundle
        blocks = []
    if not blocks:
        raise CABundleUnusable(
            f"{CA_BUNDLE_VAR}={path} holds no PEM certificate; point it at the PEM file of the "
            "CA that signed the control plane's certificate."
        )
    return b"".join(blocks).decode("ascii")
