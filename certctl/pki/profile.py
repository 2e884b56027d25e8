"""Certificate profiles and their enforcement on every CSR.

``enforce`` is the single gate between a request and a signature: it turns a parsed CSR
plus the control plane's extra names into a ``Grant`` (exactly what will be certified) or
raises ``ProfileViolation`` naming the rule that failed, so API clients can show the
operator which profile field to change. The CA signs grants, never raw requests.

The profile is the stored domain profile, ``certctl.core.model.CertificateProfile``; this
module only adds what needs ``cryptography`` or is costly to redo per request: the OID of
each extended key usage and the profile's compiled ``required_san_patterns`` (``Profile``).
The default lifetime of a leaf is not a profile field: it is the issuer's, passed in as
``validity`` (90 days unless the issuer says otherwise).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from certctl.core.model import CertificateProfile, ExtendedKeyUsage, KeyRule
from certctl.pki.csr import CertificateRequest
from certctl.pki.errors import PKIError, ProfileError
from certctl.pki.keys import KeySpec, describe_key, key_spec
from certctl.pki.names import NO_NAMES, SubjectAltNames, from_text, name_problem

# X.509 validity has one-second precision, so no certificate can live for less.
_SECOND = timedelta(seconds=1)

# A leaf's lifetime when the request names none, capped by the profile's max_ttl_seconds.
DEFAULT_VALIDITY: Final = timedelta(days=90)

_EKU_OIDS: Final[MappingProxyType[ExtendedKeyUsage, x509.ObjectIdentifier]] = MappingProxyType(
    {
        ExtendedKeyUsage.SERVER_AUTH: ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsage.CLIENT_AUTH: ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsage.CODE_SIGNING: ExtendedKeyUsageOID.CODE_SIGNING,
        ExtendedKeyUsage.EMAIL_PROTECTION: ExtendedKeyUsageOID.EMAIL_PROTECTION,
        ExtendedKeyUsage.TIME_STAMPING: ExtendedKeyUsageOID.TIME_STAMPING,
    }
)
_EKU_BY_OID: Final = MappingProxyType({oid: usage for usage, oid in _EKU_OIDS.items()})


def eku_oid(usage: ExtendedKeyUsage) -> x509.ObjectIdentifier:
    """The X.509 OID of an extended key usage."""
    return _EKU_OIDS[usage]


def eku_from_oid(oid: x509.ObjectIdentifier) -> ExtendedKeyUsage | None:
    """The usage an OID stands for, or None for one no profile can allow."""
    return _EKU_BY_OID.get(oid)


class Rule(StrEnum):
    """Profile rules, named as the profile fields an operator would change."""

    ALLOWED_KEY_ALGORITHMS = "allowed_key_algorithms"
    COMMON_NAME = "common_name"
    SAN_SYNTAX = "san_syntax"
    NAMES_REQUIRED = "names_required"
    SAN_PATTERNS = "required_san_patterns"
    ALLOWED_EKUS = "allowed_ekus"
    MAX_TTL = "max_ttl_seconds"


class ProfileViolation(PKIError):
    """A CSR (or requested lifetime) that the profile does not allow; ``rule`` says which."""

    def __init__(self, rule: Rule, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _describe_rule(rule: KeyRule) -> str:
    return f"{rule.algorithm}>={rule.min_size}"


@dataclass(frozen=True, slots=True)
class Profile:
    """A ``CertificateProfile`` checked and compiled for enforcement.

    It holds the stored profile itself plus its compiled ``required_san_patterns``, never
    a copy of the profile's fields. ``enforce`` accepts the stored profile directly and
    compiles it through a small cache; callers that hold a profile for long can compile it
    once with ``Profile.from_model`` (or ``Profile(model)``), which refuses a profile
    nothing could be issued under with a ``ProfileError`` naming the field to change.
    """

    model: CertificateProfile
    san_patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        model = self.model
        name = model.name
        compiled = []
        for index, pattern in enumerate(model.required_san_patterns):
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise ProfileError(
                    "required_san_patterns",
                    f"profile {name!r} required_san_patterns[{index}] {pattern!r} is not a "
                    f"valid regular expression ({exc}); fix the pattern.",
                ) from exc
        if not model.allowed_key_algorithms:
            raise ProfileError(
                "allowed_key_algorithms",
                f"profile {name!r} allowed_key_algorithms is empty; list one.",
            )
        if not model.allowed_ekus:
            raise ProfileError("allowed_ekus", f"profile {name!r} allowed_ekus is empty; list one.")
        if model.max_ttl_seconds < 0:
            raise ProfileError(
                "max_ttl_seconds",
                f"profile {name!r} max_ttl_seconds is {model.max_ttl_seconds}; set it to a "
                "number of seconds, or 0 for no cap.",
            )
        object.__setattr__(self, "san_patterns", tuple(compiled))

    @classmethod
    def from_model(cls, model: CertificateProfile) -> Profile:
        return cls(model)

    @property
    def max_ttl(self) -> timedelta | None:
        """The lifetime cap; ``max_ttl_seconds == 0`` means none."""
        seconds = self.model.max_ttl_seconds
        return timedelta(seconds=seconds) if seconds else None


# Profiles are frozen values, so the compiled form of an equal profile can be reused: the
# control plane passes the stored profile on every issuance.
_compile = functools.lru_cache(maxsize=128)(Profile.from_model)


def _compiled(model: CertificateProfile) -> Profile:
    try:
        return _compile(model)
    except TypeError:
        # A field holds an unhashable value (a list decoded from JSON): compile uncached.
        return Profile.from_model(model)


@dataclass(frozen=True, slots=True)
class Grant:
    """Exactly what the CA will put in the certificate, after every rule passed."""

    common_name: str | None
    sans: SubjectAltNames
    key: KeySpec
    extended_key_usages: tuple[ExtendedKeyUsage, ...]
    lifetime: timedelta
    must_staple: bool


def enforce(
    request: CertificateRequest,
    profile: CertificateProfile | Profile,
    *,
    ttl: timedelta | None = None,
    extra_sans: SubjectAltNames = NO_NAMES,
    validity: timedelta = DEFAULT_VALIDITY,
) -> Grant:
    """Check ``request`` against every rule of ``profile``; the first failure is raised.

    Names are the union of the CSR's SANs, its common name (folded in when it is not
    already a SAN, since clients ignore the CN) and ``extra_sans`` from the control plane.
    A requested ``ttl`` above ``max_ttl_seconds`` is refused; without one the leaf lives
    for the issuer's ``validity``, capped by ``max_ttl_seconds``.
    """
    if validity < _SECOND:
        raise PKIError(f"leaf validity {validity} is under a second; set it to days.")
    compiled = profile if isinstance(profile, Profile) else _compiled(profile)
    key = _check_key(request, compiled.model)
    sans = request.sans.union(_common_name_sans(request.common_name)).union(extra_sans)
    _check_names(request, compiled, sans)
    return Grant(
        common_name=request.common_name,
        sans=sans,
        key=key,
        extended_key_usages=_extended_key_usages(request, compiled.model),
        lifetime=_lifetime(compiled, ttl, validity),
        must_staple=compiled.model.must_staple,
    )


def _check_key(request: CertificateRequest, profile: CertificateProfile) -> KeySpec:
    spec = key_spec(request.public_key)
    if spec is None or not any(
        spec.algorithm is rule.algorithm and spec.size >= rule.min_size
        for rule in profile.allowed_key_algorithms
    ):
        allowed = ", ".join(_describe_rule(rule) for rule in profile.allowed_key_algorithms)
        raise ProfileViolation(
            Rule.ALLOWED_KEY_ALGORITHMS,
            f"CSR key {describe_key(request.public_key)} is not allowed by profile "
            f"{profile.name!r} (allowed_key_algorithms: {allowed}); generate an allowed key.",
        )
    return spec


def _common_name_sans(common_name: str | None) -> SubjectAltNames:
    if common_name is None:
        return NO_NAMES
    names = from_text(common_name)
    if name_problem(names) is not None:
        raise ProfileViolation(
            Rule.COMMON_NAME,
            f"CSR common name {common_name!r} is not a host name, IP or email address; "
            "put the name in the CN or leave it empty.",
        )
    return names


def _check_names(request: CertificateRequest, profile: Profile, sans: SubjectAltNames) -> None:
    if request.unsupported_names:
        raise ProfileViolation(
            Rule.SAN_SYNTAX,
            f"CSR subjectAltName {request.unsupported_names[0]} is of a kind this CA does not "
            "issue; use DNS, IP, email or URI names.",
        )
    problem = name_problem(sans)
    if problem is not None:
        raise ProfileViolation(Rule.SAN_SYNTAX, f"{problem}; correct the name in the CSR.")
    if not sans:
        raise ProfileViolation(
            Rule.NAMES_REQUIRED,
            "CSR names nothing (no subjectAltName and no common name); add the host names.",
        )
    if profile.san_patterns:
        for value in sans.values():
            if not any(pattern.fullmatch(value) for pattern in profile.san_patterns):
                raise ProfileViolation(
                    Rule.SAN_PATTERNS,
                    f"name {value!r} matches none of profile {profile.model.name!r} "
                    f"required_san_patterns {list(profile.model.required_san_patterns)}; "
                    "request a name the profile allows.",
                )


def _extended_key_usages(
    request: CertificateRequest, profile: CertificateProfile
) -> tuple[ExtendedKeyUsage, ...]:
    """The CSR may narrow the profile's usages (least privilege) but never widen them."""
    if request.extended_key_usages is None:
        return profile.allowed_ekus
    granted = []
    for oid in request.extended_key_usages:
        usage = eku_from_oid(oid)
        if usage is None or usage not in profile.allowed_ekus:
            name = oid.dotted_string if usage is None else str(usage)
            raise ProfileViolation(
                Rule.ALLOWED_EKUS,
                f"CSR asks for extended key usage {name}, which profile {profile.name!r} does "
                f"not allow (allowed_ekus: {', '.join(profile.allowed_ekus)}); drop it.",
            )
        granted.append(usage)
    return tuple(dict.fromkeys(granted)) or profile.allowed_ekus


def _lifetime(profile: Profile, ttl: timedelta | None, validity: timedelta) -> timedelta:
    max_ttl = profile.max_ttl
    if ttl is None:
        return validity if max_ttl is None else min(validity, max_ttl)
    if ttl < _SECOND:
        raise ProfileViolation(
            Rule.MAX_TTL, f"requested TTL {ttl} is under a second; ask for more."
        )
    if max_ttl is not None and ttl > max_ttl:
        raise ProfileViolation(
            Rule.MAX_TTL,
            f"requested TTL {ttl} exceeds profile {profile.model.name!r} max_ttl_seconds "
            f"{profile.model.max_ttl_seconds} ({max_ttl}); ask for a shorter lifetime.",
        )
    return ttl
