"""The control plane's TLS material: preflight, the live ``SSLContext``, and a bootstrap pair.

The control plane serves HTTPS only, so unusable material is a refusal to start with one
sentence naming the variable and the fix, never a plaintext fallback. The earlier
implementation checked only that the files existed and parsed as a matching pair, so an
expired certificate booted and clients failed instead; ``preflight`` also checks the
validity window and that the certificate names the address the server binds.

Reloads follow "fail-safe on reload, fail-loud on startup": a bad new pair on SIGHUP is
logged and the previous certificate stays in service.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from certctl.config import ConfigError
from certctl.core.errors import CertctlError
from certctl.core.model import ExtendedKeyUsage
from certctl.deploy import write_atomic
from certctl.logging import get_logger
from certctl.pki.ca import CertificateAuthority, self_signed_root
from certctl.pki.errors import PKIError
from certctl.pki.keys import ECDSA_P256, generate_key, private_key_pem
from certctl.pki.names import SubjectAltNames, from_general_names, from_text, name_problem
from certctl.pki.pem import (
    MAX_PEM_BYTES,
    certificates_pem,
    fingerprint_sha256,
    key_matches_certificate,
    load_private_key,
    split_bundle,
)
from certctl.pki.profile import Grant

__all__ = [
    "ALPN_PROTOCOLS",
    "CERT_VAR",
    "HOST_VAR",
    "KEY_VAR",
    "ReloadableTLS",
    "TLSBootstrap",
    "TLSBootstrapError",
    "TLSPreflightError",
    "init_tls",
    "preflight",
    "server_context",
]

CERT_VAR = "CERTCTL_SERVER_TLS_CERT_PATH"
KEY_VAR = "CERTCTL_SERVER_TLS_KEY_PATH"
HOST_VAR = "CERTCTL_SERVER_HOST"
_INIT_HINT = "certctl server init-tls --dir DIR"

# What hypercorn's own create_ssl_context offers: HTTP/2 first, HTTP/1.1 for simple clients.
ALPN_PROTOCOLS = ("h2", "http/1.1")

# The bootstrap CA's key is thrown away once it has signed the server certificate, so its
# long life cannot be used to mint more certificates; the server certificate stays within
# the 825 days Apple clients accept even from private CAs.
BOOTSTRAP_CA_LIFETIME = timedelta(days=3650)
BOOTSTRAP_SERVER_LIFETIME = timedelta(days=365)
_BOOTSTRAP_NAMES = SubjectAltNames(
    dns=("localhost",), ips=(ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
)
_MAX_COMMON_NAME = 64


class TLSPreflightError(ConfigError):
    """The certificate or key cannot serve HTTPS; ``variable`` names the setting to fix."""

    def __init__(self, variable: str, message: str) -> None:
        # Library reasons quoted in the message may span lines; the refusal is one line.
        super().__init__(variable, " ".join(message.split()))


class TLSBootstrapError(CertctlError):
    """``init_tls`` would overwrite material or was asked for a name it cannot certify."""


# --------------------------------------------------------------------------- preflight


@dataclass(frozen=True, slots=True)
class _Pair:
    """A certificate chain and key that passed every check, as the exact bytes checked."""

    cert_path: Path
    key_path: Path
    cert_pem: bytes
    key_pem: bytes
    leaf: x509.Certificate


def preflight(cert_path: Path | None, key_path: Path | None, host: str, now: datetime) -> None:
    """Refuse material that cannot serve ``host`` at ``now`` with a ``TLSPreflightError``.

    Checks, in the order an operator would fix them: both paths set, both files readable,
    the certificate chain and the unencrypted key parse, the key belongs to the leaf,
    ``now`` is inside the leaf's validity, the leaf names ``host``, and OpenSSL accepts
    the pair (it refuses, for example, RSA keys under 2048 bits).

    A wildcard bind address (``0.0.0.0``, ``::``) passes any certificate: it listens on
    every address, so the name clients dial (a DNS name, a load balancer, a service name)
    cannot be known here, and the clients' own verification is the check that remains.
    """
    _check_pair(cert_path, key_path, host, now)


def _check_pair(cert_path: Path | None, key_path: Path | None, host: str, now: datetime) -> _Pair:
    cert_file = _require(cert_path, CERT_VAR, "a PEM certificate chain, leaf first")
    key_file = _require(key_path, KEY_VAR, "the PEM private key of that certificate")
    cert_pem = _read(cert_file, CERT_VAR)
    key_pem = _read(key_file, KEY_VAR)
    try:
        leaf = split_bundle(cert_pem).leaf
    except PKIError as exc:
        raise TLSPreflightError(CERT_VAR, f"{CERT_VAR}={cert_file}: {exc}") from None
    try:
        key = load_private_key(key_pem)
    except PKIError as exc:
        raise TLSPreflightError(KEY_VAR, f"{KEY_VAR}={key_file}: {exc}") from None
    if not key_matches_certificate(key, leaf):
        raise TLSPreflightError(
            KEY_VAR,
            f"{KEY_VAR}={key_file} is not the private key of the certificate in "
            f"{CERT_VAR}={cert_file}; point it at the key that certificate was issued for.",
        )
    _check_validity(leaf, cert_file, now)
    _check_host(leaf, cert_file, host)
    pair = _Pair(cert_file, key_file, cert_pem, key_pem, leaf)
    _check_openssl_accepts(pair)
    return pair


def _require(path: Path | None, variable: str, what: str) -> Path:
    if path is None:
        raise TLSPreflightError(
            variable,
            f"{variable} is not set and the control plane serves HTTPS only; point it at "
            f"{what}, or create a self-signed pair with `{_INIT_HINT}`.",
        )
    return path


def _read(path: Path, variable: str) -> bytes:
    """At most one byte over the PEM limit, so a wrong path (a log, a device) cannot eat
    memory and the PEM parser reports the size instead."""
    try:
        with path.open("rb") as file:
            return file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TLSPreflightError(
            variable,
            f"{variable}={path} cannot be read ({exc.strerror or exc}); fix the path or the "
            "file's permissions.",
        ) from None


def _check_validity(leaf: x509.Certificate, path: Path, now: datetime) -> None:
    if now >= leaf.not_valid_after_utc:
        raise TLSPreflightError(
            CERT_VAR,
            f"{CERT_VAR}={path} expired at {leaf.not_valid_after_utc.isoformat()}; renew it, "
            f"or create a new pair with `{_INIT_HINT} --force`.",
        )
    if now < leaf.not_valid_before_utc:
        raise TLSPreflightError(
            CERT_VAR,
            f"{CERT_VAR}={path} is not valid before {leaf.not_valid_before_utc.isoformat()}; "
            "check this machine's clock or wait until then.",
        )


def _check_host(leaf: x509.Certificate, path: Path, host: str) -> None:
    sans = _leaf_names(leaf)
    if _covers(sans, host):
        return
    names = ", ".join(sans.values()) or "no subjectAltName at all"
    raise TLSPreflightError(
        HOST_VAR,
        f"{HOST_VAR}={host} is not a name in {CERT_VAR}={path} ({names}); bind to one of "
        f"those names or use a certificate for {host} (`{_INIT_HINT} --host {host}`).",
    )


def _leaf_names(leaf: x509.Certificate) -> SubjectAltNames:
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return SubjectAltNames()
    return from_general_names(extension.value)[0]


def _covers(sans: SubjectAltNames, host: str) -> bool:
    """Clients match an IP against IP SANs only and a name against DNS SANs only."""
    bare = host.strip("[]")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        name = bare.lower().rstrip(".")
        return any(_dns_matches(pattern, name) for pattern in sans.dns)
    return address.is_unspecified or address in sans.ips


def _dns_matches(pattern: str, name: str) -> bool:
    """RFC 6125: a leading ``*`` stands for exactly one whole label."""
    if pattern.startswith("*."):
        label, _, parent = name.partition(".")
        return bool(label) and parent == pattern[2:]
    return pattern == name


def _check_openssl_accepts(pair: _Pair) -> None:
    """Load the pair into a throwaway context: OpenSSL's security level refuses material
    that parses fine (small RSA keys, SHA-1 signatures), and that must be a refusal
    naming the file, not an ``ssl.SSLError`` traceback at bind time."""
    try:
        with _loadable(pair) as (cert, key):
            server_context(Path(cert), Path(key))
    except ssl.SSLError as exc:
        raise TLSPreflightError(
            CERT_VAR,
            f"{CERT_VAR}={pair.cert_path} is refused by OpenSSL ({exc.reason or exc}); use "
            "an ECDSA P-256 or RSA 2048+ key with a SHA-256 (or stronger) signature.",
        ) from None


# --------------------------------------------------------------------------- contexts


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A TLS 1.3-only server context presenting the pair at the given paths.

    Starts from hypercorn's choices (ALPN h2 and http/1.1, no compression) but with TLS 1.3
    as the minimum: every client we serve (agents, browsers, curl) speaks it, and 1.3
    leaves no cipher-suite or renegotiation settings to get wrong.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    context.load_cert_chain(cert_path, key_path)
    return context


@contextmanager
def _loadable(pair: _Pair) -> Iterator[tuple[str, str]]:
    """The checked bytes behind paths OpenSSL can open, so what is loaded is exactly what
    was checked even if the operator's files change in between."""
    with ExitStack() as stack:
        yield (
            stack.enter_context(_private_file(pair.cert_pem)),
            stack.enter_context(_private_file(pair.key_pem)),
        )


@contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """An anonymous in-memory file where the kernel has them (Linux), so private key
    bytes reach no disk they were not already on; elsewhere a 0600 temp file."""
    in_memory = hasattr(os, "memfd_create")
    if in_memory:
        fd = os.memfd_create("certctl-tls", os.MFD_CLOEXEC)
        path = f"/proc/self/fd/{fd}"
    else:
        fd, path = tempfile.mkstemp(prefix="certctl-tls-")
    try:
        with open(fd, "wb", closefd=False) as file:
            file.write(data)
        yield path
    finally:
        os.close(fd)
        if not in_memory:
            os.unlink(path)


def _key_slot(key: CertificatePublicKeyTypes) -> str:
    """The OpenSSL certificate slot a key occupies: one per key type, not per key."""
    for kind, name in (
        (rsa.RSAPublicKey, "RSA"),
        (ec.EllipticCurvePublicKey, "ECDSA"),
        (ed25519.Ed25519PublicKey, "Ed25519"),
        (ed448.Ed448PublicKey, "Ed448"),
    ):
        if isinstance(key, kind):
            return name
    return type(key).__name__


class ReloadableTLS:
    """The one live ``SSLContext`` of the listener, reloaded in place on SIGHUP.

    The listener holds this context object for its whole life, so a reload must change the
    object itself: ``load_cert_chain`` on it replaces what new handshakes present (OpenSSL
    copies the certificate into each connection as it starts), while open connections keep
    theirs. OpenSSL keeps one certificate per key type, so a reload that changes the key
    type would leave the old certificate served beside the new one; that is refused and
    needs a restart.
    """

    def __init__(
        self, cert_path: Path | None, key_path: Path | None, host: str, now: datetime
    ) -> None:
        """Raises ``TLSPreflightError`` when the material fails ``preflight``."""
        pair = _check_pair(cert_path, key_path, host, now)
        with _loadable(pair) as (cert, key):
            self._context = server_context(Path(cert), Path(key))
        self._cert_path = cert_path
        self._key_path = key_path
        self._host = host
        self._leaf = pair.leaf

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    @property
    def certificate(self) -> x509.Certificate:
        """The leaf new handshakes present."""
        return self._leaf

    def reload(self, now: datetime) -> bool:
        """Re-read the files; switch to them only if they pass ``preflight``.

        Returns whether the new pair is now served; a refusal is logged as an error and
        the previous certificate stays, so a half-rotated pair never takes the API down.
        """
        log = get_logger(__name__)
        try:
            pair = _check_pair(self._cert_path, self._key_path, self._host, now)
            self._check_same_slot(pair)
        except TLSPreflightError as exc:
            # The reason is the operator's fix; a traceback would only bury it.
            log.error(  # noqa: TRY400
                "tls certificate reload refused; still serving the previous certificate",
                variable=exc.variable,
                reason=str(exc),
                fingerprint=fingerprint_sha256(self._leaf),
            )
            return False
        # The same bytes just loaded into a fresh context with the same settings, so this
        # cannot fail half-way and leave the live context without a usable pair.
        with _loadable(pair) as (cert, key):
            self._context.load_cert_chain(cert, key)
        self._leaf = pair.leaf
        log.info(
            "tls certificate reloaded",
            cert_path=str(pair.cert_path),
            fingerprint=fingerprint_sha256(pair.leaf),
            not_after=pair.leaf.not_valid_after_utc.isoformat(),
        )
        return True

    def _check_same_slot(self, pair: _Pair) -> None:
        old, new = _key_slot(self._leaf.public_key()), _key_slot(pair.leaf.public_key())
        if old != new:
            raise TLSPreflightError(
                KEY_VAR,
                f"{KEY_VAR}={pair.key_path} is an {new} key but the served certificate has an "
                f"{old} key, which a live reload cannot replace; restart the server to "
                "change the key type.",
            )


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True, slots=True)
class TLSBootstrap:
    """Where ``init_tls`` wrote: the CA agents trust, the server chain, and its key."""

    ca_path: Path
    cert_path: Path
    key_path: Path
    not_after: datetime


def init_tls(directory: Path, *, hosts: Sequence[str], force: bool, now: datetime) -> TLSBootstrap:
    """A self-signed CA and a server certificate from it, for a first start without a PKI.

    The server certificate names localhost, 127.0.0.1, ::1 and ``hosts``. Agents trust
    ``ca.pem`` (``CERTCTL_SERVER_CA_BUNDLE_PATH``) instead of skipping verification. The
    CA key is never written: nothing else can be issued under this CA, so the trust
    agents place in it covers this one certificate only.
    """
    given = _given_names(hosts)
    ca_path = directory / "ca.pem"
    cert_path = directory / "server.pem"
    key_path = directory / "server-key.pem"
    if not force:
        for path in (ca_path, cert_path, key_path):
            if path.exists():
                raise TLSBootstrapError(
                    f"{path} already exists; pass --force to overwrite it, or choose another --dir."
                )
    ca_key = generate_key(ECDSA_P256)
    authority = CertificateAuthority(
        self_signed_root(ca_key, "certctl server bootstrap CA", now, BOOTSTRAP_CA_LIFETIME),
        ca_key,
    )
    server_key = generate_key(ECDSA_P256)
    grant = Grant(
        common_name=next((n for n in given.values() if len(n) <= _MAX_COMMON_NAME), "localhost"),
        sans=given.union(_BOOTSTRAP_NAMES),
        key=ECDSA_P256,
        extended_key_usages=(ExtendedKeyUsage.SERVER_AUTH,),
        lifetime=BOOTSTRAP_SERVER_LIFETIME,
        must_staple=False,
    )
    leaf = authority.issue(server_key.public_key(), grant, now)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(key_path, private_key_pem(server_key), 0o600)
    write_atomic(cert_path, leaf.pem + certificates_pem((authority.certificate,)), 0o644)
    write_atomic(ca_path, certificates_pem((authority.certificate,)), 0o644)
    return TLSBootstrap(ca_path, cert_path, key_path, leaf.not_after)


def _given_names(hosts: Sequence[str]) -> SubjectAltNames:
    given = SubjectAltNames()
    for host in hosts:
        names = from_text(host.strip("[]"))
        problem = name_problem(names)
        if names.emails or problem is not None:
            raise TLSBootstrapError(
                f"--host {host!r} is not a host name or IP address clients could connect to; "
                "pass the server's DNS name or address."
            )
        if any(ip.is_unspecified for ip in names.ips):
            raise TLSBootstrapError(
                f"--host {host} is a listen-on-everything address, not one clients dial; "
                "pass the server's DNS name or its real IP address."
            )
        given = given.union(names)
    return given
