"""Issuance properties: valid CSRs validate under their chain with exactly the requested
names; CSRs outside the profile are refused naming the one rule they break.

Keys come from a small pool (generation is the slow part); examples vary names, usages,
key rules, patterns, lifetimes and must-staple. Generated profiles are TLS profiles
(serverAuth and/or clientAuth, perhaps with other usages), because cryptography's
verifier validates a path for a TLS server or client and nothing else.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from pki_strategies import hosts, labels, name_sets

from certctl.connectors.issuers.local import LocalCA, LocalCAConfig
from certctl.core.model import CertificateProfile, ExtendedKeyUsage, KeyAlgorithm, KeyRule
from certctl.pki.chain import verify_chain
from certctl.pki.csr import build_csr
from certctl.pki.keys import (
    ECDSA_P256,
    ECDSA_P384,
    ED25519,
    RSA_2048,
    RSA_3072,
    KeySpec,
    SigningKey,
)
from certctl.pki.names import SubjectAltNames
from certctl.pki.pem import load_certificates
from certctl.pki.profile import DEFAULT_VALIDITY, ProfileViolation, Rule, eku_oid
from certctl.testing.certs import (
    ANY_KEY_RULES,
    DEFAULT_PROFILE,
    intermediate_ca,
    pooled_key,
    root_ca,
    unacceptable_keys,
    write_authority,
)

NOW = datetime(2025, 6, 1, tzinfo=UTC)
ROOT = root_ca(NOW)
ISSUING = intermediate_ca(ROOT, NOW)
SPECS = (ECDSA_P256, ECDSA_P384, RSA_2048, RSA_3072, ED25519)
TLS_USAGES = (ExtendedKeyUsage.SERVER_AUTH, ExtendedKeyUsage.CLIENT_AUTH)
OTHER_USAGES = (
    ExtendedKeyUsage.CODE_SIGNING,
    ExtendedKeyUsage.EMAIL_PROTECTION,
    ExtendedKeyUsage.TIME_STAMPING,
)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    directory = tmp_path_factory.mktemp("sub-ca")
    cert_path, key_path = write_authority(ISSUING, directory)
    config = LocalCAConfig(
        data_dir=directory / "data", ca_cert_path=cert_path, ca_key_path=key_path
    )
    return LocalCA.open(config, NOW)


# Strategies are built once here: building them inside each example costs more than the
# issuance under test.
host_tuples = st.lists(hosts, min_size=1, max_size=3).map(tuple)
extra_name_sets = st.lists(hosts, max_size=2).map(lambda dns: SubjectAltNames(dns=tuple(dns)))
tls_usages = st.lists(st.sampled_from(TLS_USAGES), min_size=1, unique=True).map(tuple)
other_usages = st.lists(st.sampled_from(OTHER_USAGES), unique=True).map(tuple)
any_usages = st.lists(
    st.sampled_from(TLS_USAGES + OTHER_USAGES), min_size=1, max_size=4, unique=True
)
extra_key_rules = st.lists(
    st.sampled_from([KeyRule(KeyAlgorithm.RSA, 4096), KeyRule(KeyAlgorithm.ECDSA, 384)])
).map(tuple)
validities = st.timedeltas(timedelta(hours=1), timedelta(days=400))
DAY = 86_400
# max_ttl_seconds: 0 means no cap.
max_ttls = st.just(0) | st.integers(600, 400 * DAY)
bad_names = st.one_of(
    st.builds("{}..{}".format, labels, hosts).map(lambda name: SubjectAltNames(dns=(name,))),
    hosts.map(lambda host: SubjectAltNames(dns=("-" + host,))),
    st.builds("{}_x.{}".format, labels, hosts).map(lambda name: SubjectAltNames(dns=(name,))),
    hosts.map(lambda host: SubjectAltNames(dns=("a" * 64 + "." + host,))),
    st.builds("{} x@{}".format, labels, hosts).map(lambda name: SubjectAltNames(emails=(name,))),
    hosts.map(lambda host: SubjectAltNames(emails=(host,))),
    hosts.map(lambda host: SubjectAltNames(uris=(host,))),
)
bad_common_names = st.builds("{}{}{}".format, labels, st.sampled_from([" ", "_", "!", "ü"]), labels)


@dataclass
class Case:
    """One issuance request: what the agent asks for and what the profile allows."""

    key: SigningKey
    spec: KeySpec
    profile: CertificateProfile
    common_name: str | None = None
    sans: SubjectAltNames = field(default_factory=SubjectAltNames)
    extra_sans: SubjectAltNames = field(default_factory=SubjectAltNames)
    usages: tuple[ExtendedKeyUsage, ...] = ()
    ttl: timedelta | None = None
    # The issuer's default leaf lifetime, used when no ttl is requested.
    validity: timedelta = DEFAULT_VALIDITY

    def csr(self) -> bytes:
        return build_csr(
            self.key,
            common_name=self.common_name,
            sans=self.sans,
            extended_key_usages=[eku_oid(usage) for usage in self.usages],
        )

    def issue(self, issuer: LocalCA) -> x509.Certificate:
        if self.validity != issuer.config.leaf_validity:
            issuer = LocalCA(issuer.authority, replace(issuer.config, leaf_validity=self.validity))
        issued = issuer.issue(
            self.csr(), self.profile, NOW, ttl=self.ttl, extra_sans=self.extra_sans
        )
        return load_certificates(issued.certificate_pem)[0]

    def expected_names(self) -> SubjectAltNames:
        folded = SubjectAltNames()
        if self.common_name is not None:
            try:
                folded = SubjectAltNames(ips=(ipaddress.ip_address(self.common_name),))
            except ValueError:
                folded = SubjectAltNames(dns=(self.common_name,))
        return self.sans.union(folded).union(self.extra_sans)


@st.composite
def valid_cases(draw: st.DrawFn) -> Case:
    # Strategies whose bounds depend on earlier draws are plain integers or sampled_from:
    # combining strategies with "|" per example costs milliseconds of validation each.
    spec = draw(st.sampled_from(SPECS))
    sans = draw(name_sets)
    extra = draw(extra_name_sets)
    common_name = draw(st.sampled_from([None, draw(hosts), *sans.dns, *map(str, sans.ips)]))
    if not (sans.dns or sans.ips or extra.dns or common_name):
        common_name = draw(hosts)  # a server certificate needs a name to verify against
    tls = draw(tls_usages)
    requested = tuple(usage for usage in tls if draw(st.booleans())) if draw(st.booleans()) else ()
    case = Case(
        key=pooled_key(spec, draw(st.integers(0, 1))),
        spec=spec,
        profile=DEFAULT_PROFILE,
        common_name=common_name,
        sans=sans,
        extra_sans=extra,
        usages=requested,
    )
    values = case.expected_names().values()
    max_ttl = draw(max_ttls)
    if draw(st.booleans()):
        ceiling = max_ttl or 800 * DAY
        case.ttl = timedelta(seconds=draw(st.integers(60, ceiling)))
    case.validity = draw(validities)
    case.profile = replace(
        DEFAULT_PROFILE,
        allowed_key_algorithms=(
            KeyRule(spec.algorithm, draw(st.integers(1, spec.size))),
            *draw(extra_key_rules),
        ),
        allowed_ekus=(*tls, *draw(other_usages)),
        required_san_patterns=[(), (".*",), tuple(re.escape(value) for value in values)][
            draw(st.integers(0, 2))
        ],
        max_ttl_seconds=max_ttl,
        must_staple=draw(st.booleans()),
    )
    return case


def names_in(cert: x509.Certificate) -> SubjectAltNames:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return SubjectAltNames(
        dns=tuple(names.get_values_for_type(x509.DNSName)),
        ips=tuple(names.get_values_for_type(x509.IPAddress)),  # type: ignore[arg-type]
        emails=tuple(names.get_values_for_type(x509.RFC822Name)),
        uris=tuple(names.get_values_for_type(x509.UniformResourceIdentifier)),
    )


@given(case=valid_cases())
def test_valid_requests_validate_under_their_chain_with_exactly_their_names(
    issuer: LocalCA, case: Case
) -> None:
    leaf = case.issue(issuer)
    chain = [ISSUING.certificate]
    expected = case.expected_names()
    assert names_in(leaf) == expected
    assert len(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == len(
        expected.values()
    )
    granted = case.usages or case.profile.allowed_ekus
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        eku_oid(usage) for usage in granted
    ]
    if ExtendedKeyUsage.SERVER_AUTH in granted:
        for name in [*expected.dns, *map(str, expected.ips)]:
            server_name = name.replace("*", "any", 1)
            path = verify_chain(leaf, chain, [ROOT.certificate], now=NOW, server_name=server_name)
            assert path == (leaf, ISSUING.certificate, ROOT.certificate)
    if ExtendedKeyUsage.CLIENT_AUTH in granted:
        assert verify_chain(leaf, chain, [ROOT.certificate], now=NOW)[-1] == ROOT.certificate
    profile = case.profile
    cap = profile.max_ttl_seconds  # 0: no cap
    granted_life = case.ttl or (
        min(case.validity, timedelta(seconds=cap)) if cap else case.validity
    )
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    # Whole seconds are all X.509 can encode.
    assert lifetime == timedelta(seconds=granted_life // timedelta(seconds=1))
    assert leaf.not_valid_before_utc <= NOW < leaf.not_valid_after_utc
    staple = [e for e in leaf.extensions if isinstance(e.value, x509.TLSFeature)]
    assert bool(staple) == profile.must_staple
    assert 0 < leaf.serial_number < 1 << 159


@st.composite
def violating_cases(draw: st.DrawFn) -> tuple[Case, Rule]:
    """A valid case broken in exactly one way, and the rule that way breaks."""
    rule = draw(st.sampled_from(Rule))
    spec = draw(st.sampled_from(SPECS))
    names = SubjectAltNames(dns=draw(host_tuples))
    any_key = replace(DEFAULT_PROFILE, allowed_key_algorithms=ANY_KEY_RULES)
    case = Case(key=pooled_key(spec), spec=spec, profile=any_key, sans=names)
    if rule is Rule.ALLOWED_KEY_ALGORITHMS:
        if draw(st.booleans()):
            case.key = draw(st.sampled_from(unacceptable_keys()))
        else:
            too_small = KeyRule(spec.algorithm, spec.size + 1)
            others = tuple(rule for rule in ANY_KEY_RULES if rule.algorithm is not spec.algorithm)
            case.profile = replace(any_key, allowed_key_algorithms=(too_small, *others))
    elif rule is Rule.COMMON_NAME:
        case.common_name = draw(bad_common_names)
    elif rule is Rule.SAN_SYNTAX:
        if draw(st.booleans()):
            case.sans = case.sans.union(draw(bad_names))
        else:
            case.extra_sans = draw(bad_names)
    elif rule is Rule.NAMES_REQUIRED:
        case.sans = SubjectAltNames()
    elif rule is Rule.SAN_PATTERNS:
        values = case.sans.values()
        skipped = draw(st.sampled_from(values))
        patterns = tuple(re.escape(value) for value in values if value != skipped)
        case.profile = replace(any_key, required_san_patterns=patterns or ("no-such-name",))
    elif rule is Rule.ALLOWED_EKUS:
        usages = draw(any_usages)
        outside = [usage for usage in (*TLS_USAGES, *OTHER_USAGES) if usage not in usages]
        case.usages = (*usages[:1], draw(st.sampled_from(outside)))
        case.profile = replace(any_key, allowed_ekus=tuple(usages))
    else:
        max_ttl = draw(st.integers(60, 400 * DAY))
        case.profile = replace(any_key, max_ttl_seconds=max_ttl)
        case.ttl = timedelta(seconds=max_ttl) + draw(
            st.timedeltas(timedelta(seconds=1), timedelta(days=30))
        )
    return case, rule


@given(violation=violating_cases())
def test_requests_outside_the_profile_are_refused_naming_the_rule(
    issuer: LocalCA, violation: tuple[Case, Rule]
) -> None:
    case, rule = violation
    with pytest.raises(ProfileViolation) as caught:
        case.issue(issuer)
    assert caught.value.rule is rule
    assert str(caught.value).endswith(".")
