"""Subject alternative names: the four kinds we issue, their syntax, and how they combine.

Names arrive from CSRs (attacker-controlled bytes decoded by cryptography) and from the
control plane's record of a certificate. Both go through ``name_problem`` before they can
reach a certificate, because a malformed name either breaks clients (a DNS SAN with a
space) or is a homograph attack (non-ASCII look-alikes); we only issue ASCII names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_T = TypeVar("_T")

# RFC 1035 labels (letters, digits, hyphen; 63 characters max), lowercase because we
# normalise before checking, with a single leading "*" wildcard label as CA/B allows.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS = re.compile(rf"(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}")
_HOST = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
# RFC 5321 dot-atom local part, ASCII only (SMTPUTF8 mailboxes need a different SAN type).
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x7e]+")
_MAX_DNS = 253
_MAX_LOCAL_PART = 64
_MAX_URI = 2048


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True, slots=True)
class SubjectAltNames:
    """DNS names, IP addresses, email addresses and URIs, in the order given.

    Construction normalises: DNS names are lowercased (DNS is case-insensitive) and
    repeats are dropped, so equal name sets compare equal and certificates carry no
    duplicate SAN entries.
    """

    dns: tuple[str, ...] = ()
    ips: tuple[IPAddress, ...] = ()
    emails: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "dns", _unique(name.lower() for name in self.dns))
        object.__setattr__(self, "ips", _unique(self.ips))
        object.__setattr__(self, "emails", _unique(self.emails))
        object.__setattr__(self, "uris", _unique(self.uris))

    def __bool__(self) -> bool:
        return bool(self.dns or self.ips or self.emails or self.uris)

    def values(self) -> tuple[str, ...]:
        """Every name as text, in a stable order: what SAN patterns are matched against."""
        return (*self.dns, *(str(ip) for ip in self.ips), *self.emails, *self.uris)

    def union(self, other: SubjectAltNames) -> SubjectAltNames:
        """Both sets of names, ours first, without repeats."""
        if not other:
            return self
        return SubjectAltNames(
            dns=(*self.dns, *other.dns),
            ips=(*self.ips, *other.ips),
            emails=(*self.emails, *other.emails),
            uris=(*self.uris, *other.uris),
        )

    def general_names(self) -> list[x509.GeneralName]:
        return [
            *(x509.DNSName(name) for name in self.dns),
            *(x509.IPAddress(ip) for ip in self.ips),
            *(x509.RFC822Name(email) for email in self.emails),
            *(x509.UniformResourceIdentifier(uri) for uri in self.uris),
        ]


NO_NAMES = SubjectAltNames()


def from_general_names(
    names: Iterable[x509.GeneralName],
) -> tuple[SubjectAltNames, tuple[str, ...]]:
    """The names we can issue, and a description of each one we cannot (otherName, ...)."""
    dns: list[str] = []
    ips: list[IPAddress] = []
    emails: list[str] = []
    uris: list[str] = []
    unsupported: list[str] = []
    for name in names:
        if isinstance(name, x509.DNSName):
            dns.append(name.value)
        elif isinstance(name, x509.IPAddress) and isinstance(
            name.value, ipaddress.IPv4Address | ipaddress.IPv6Address
        ):
            ips.append(name.value)
        elif isinstance(name, x509.RFC822Name):
            emails.append(name.value)
        elif isinstance(name, x509.UniformResourceIdentifier):
            uris.append(name.value)
        else:
            unsupported.append(f"{type(name).__name__} {name.value!r}")
    sans = SubjectAltNames(dns=tuple(dns), ips=tuple(ips), emails=tuple(emails), uris=tuple(uris))
    return sans, tuple(unsupported)


def from_text(value: str) -> SubjectAltNames:
    """One name written as text (a common name, a name from the API): IP, email or DNS.

    Only text that could be an address is parsed as one (IPv4 starts with a digit, IPv6
    has a colon): a failed parse raises, and host names are the common case per CSR.
    """
    if value[:1].isdigit() or ":" in value:
        try:
            return SubjectAltNames(ips=(ipaddress.ip_address(value),))
        except ValueError:
            pass
    if "@" in value:
        return SubjectAltNames(emails=(value,))
    return SubjectAltNames(dns=(value,))


def name_problem(sans: SubjectAltNames) -> str | None:
    """Why the first unusable name is unusable, or None when every name can be issued."""
    for name in sans.dns:
        if len(name) > _MAX_DNS or not _DNS.fullmatch(name):
            return (
                f"DNS name {name!r} is not a valid host name (ASCII letters, digits and "
                "hyphens in dot-separated labels, optional leading '*.')"
            )
    for email in sans.emails:
        local, _, domain = email.rpartition("@")
        if (
            len(local) > _MAX_LOCAL_PART
            or not _LOCAL_PART.fullmatch(local)
            or len(domain) > _MAX_DNS
            or not _HOST.fullmatch(domain.lower())
        ):
            return f"email address {email!r} is not an ASCII mailbox such as user@example.com"
    for uri in sans.uris:
        if len(uri) > _MAX_URI or not _URI.fullmatch(uri):
            return f"URI {uri!r} is not an absolute ASCII URI without spaces"
    return None
