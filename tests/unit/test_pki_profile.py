"""Profile enforcement: one example per rule, name folding, usages and lifetimes."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certctl.core.model import CertificateProfile, ExtendedKeyUsage, KeyAlgorithm, KeyRule
from certctl.pki.csr import CertificateRequest, build_csr, load_csr
from certctl.pki.errors import PKIError, ProfileError
from certctl.pki.keys import ECDSA_P256, ECDSA_P384, RSA_2048
from certctl.pki.names import SubjectAltNames
from certctl.pki.profile import (
    DEFAULT_VALIDITY,
    Profile,
    ProfileViolation,
    Rule,
    eku_from_oid,
    eku_oid,
    enforce,
)
from certctl.testing.certs import DEFAULT_PROFILE, pooled_key, unacceptable_keys

DEFAULT = DEFAULT_PROFILE


def request(
    *,
    common_name: str | None = None,
    dns: tuple[str, ...] = (),
    emails: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
    usages: tuple[x509.ObjectIdentifier, ...] = (),
) -> CertificateRequest:
    sans = SubjectAltNames(dns=dns, emails=emails, uris=uris)
    return load_csr(
        build_csr(pooled_key(), common_name=common_name, sans=sans, extended_key_usages=usages)
    )


def violation(
    req: CertificateRequest, profile: CertificateProfile | Profile = DEFAULT, **kwargs: object
) -> Rule:
    with pytest.raises(ProfileViolation) as caught:
        enforce(req, profile, **kwargs)  # type: ignore[arg-type]
    return caught.value.rule


def test_default_grant_folds_the_common_name_into_the_names() -> None:
    grant = enforce(request(common_name="Example.COM", dns=("www.example.com",)), DEFAULT)
    assert grant.common_name == "Example.COM"
    assert grant.sans == SubjectAltNames(dns=("www.example.com", "example.com"))
    assert grant.key == ECDSA_P256
    assert grant.extended_key_usages == (ExtendedKeyUsage.SERVER_AUTH,)
    assert grant.lifetime == timedelta(days=90)
    assert not grant.must_staple


def test_common_name_already_among_the_names_is_not_repeated() -> None:
    grant = enforce(request(common_name="a.example", dns=("A.example", "b.example")), DEFAULT)
    assert grant.sans.dns == ("a.example", "b.example")


def test_ip_and_email_common_names_become_ip_and_email_names() -> None:
    assert enforce(request(common_name="192.0.2.1"), DEFAULT).sans == SubjectAltNames(
        ips=(ipaddress.ip_address("192.0.2.1"),)
    )
    assert enforce(request(common_name="me@example.com"), DEFAULT).sans == SubjectAltNames(
        emails=("me@example.com",)
    )


def test_extra_names_from_the_control_plane_are_added_and_checked() -> None:
    extra = SubjectAltNames(dns=("api.example",), ips=(ipaddress.ip_address("10.0.0.1"),))
    grant = enforce(request(dns=("a.example",)), DEFAULT, extra_sans=extra)
    assert grant.sans == SubjectAltNames(dns=("a.example", "api.example"), ips=extra.ips)
    bad = SubjectAltNames(dns=("not a host",))
    assert violation(request(dns=("a.example",)), extra_sans=bad) is Rule.SAN_SYNTAX


@pytest.mark.parametrize("key", unacceptable_keys(), ids=["rsa1024", "secp256k1", "ed448"])
def test_keys_outside_the_profile_break_allowed_key_algorithms(key: object) -> None:
    req = load_csr(build_csr(key, common_name="a.example"))  # type: ignore[arg-type]
    with pytest.raises(ProfileViolation, match="generate an allowed key") as caught:
        enforce(req, DEFAULT)
    assert caught.value.rule is Rule.ALLOWED_KEY_ALGORITHMS


def test_minimum_sizes_are_per_algorithm() -> None:
    strict = replace(DEFAULT, allowed_key_algorithms=(KeyRule(KeyAlgorithm.ECDSA, 384),))
    p256 = request(dns=("a.example",))
    assert violation(p256, strict) is Rule.ALLOWED_KEY_ALGORITHMS
    p384 = load_csr(build_csr(pooled_key(ECDSA_P384), common_name="a.example"))
    assert enforce(p384, strict).key == ECDSA_P384
    rsa = load_csr(build_csr(pooled_key(RSA_2048), common_name="a.example"))
    assert violation(rsa, strict) is Rule.ALLOWED_KEY_ALGORITHMS


@pytest.mark.parametrize("common_name", ["My Web Server", "bad_host.example", "münchen.example"])
def test_common_names_that_are_not_names_break_common_name(common_name: str) -> None:
    with pytest.raises(
        ProfileViolation, match="put the name in the CN or leave it empty"
    ) as caught:
        enforce(request(common_name=common_name), DEFAULT)
    assert caught.value.rule is Rule.COMMON_NAME


@pytest.mark.parametrize(
    "names",
    [
        {"dns": ("a..example",)},
        {"dns": ("-a.example",)},
        {"dns": ("a.*.example",)},
        {"dns": ("x" * 64 + ".example",)},
        {"dns": (".".join(["abcdefgh"] * 30),)},
        {"emails": ("no-at-sign",)},
        {"emails": ("two words@example.com",)},
        {"emails": ("ok@exa mple.com",)},
        {"uris": ("no-scheme",)},
        {"uris": ("https://exa mple.com/",)},
    ],
)
def test_malformed_names_break_san_syntax(names: dict[str, tuple[str, ...]]) -> None:
    assert violation(request(**names)) is Rule.SAN_SYNTAX  # type: ignore[arg-type]


def test_san_kinds_we_do_not_issue_break_san_syntax() -> None:
    pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.RegisteredID(x509.ObjectIdentifier("1.2.3"))]),
            critical=False,
        )
        .sign(pooled_key(), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(ProfileViolation, match="use DNS, IP, email or URI names") as caught:
        enforce(load_csr(pem), DEFAULT)
    assert caught.value.rule is Rule.SAN_SYNTAX


def test_a_request_naming_nothing_breaks_names_required() -> None:
    assert violation(request()) is Rule.NAMES_REQUIRED


def test_every_name_must_match_a_san_pattern() -> None:
    profile = replace(
        DEFAULT,
        required_san_patterns=(r"[a-z0-9.-]+\.internal\.example", r"10\.\d+\.\d+\.\d+"),
    )
    assert enforce(request(dns=("db.internal.example",)), profile).sans.dns
    req = request(dns=("db.internal.example", "evil.example"))
    with pytest.raises(ProfileViolation, match=r"'evil\.example' matches none") as caught:
        enforce(req, profile)
    assert caught.value.rule is Rule.SAN_PATTERNS


def test_requested_usages_narrow_but_never_widen_the_profile() -> None:
    both = replace(
        DEFAULT, allowed_ekus=(ExtendedKeyUsage.SERVER_AUTH, ExtendedKeyUsage.CLIENT_AUTH)
    )
    narrowed = enforce(request(dns=("a.example",), usages=(ExtendedKeyUsageOID.CLIENT_AUTH,)), both)
    assert narrowed.extended_key_usages == (ExtendedKeyUsage.CLIENT_AUTH,)
    assert enforce(request(dns=("a.example",)), both).extended_key_usages == both.allowed_ekus
    wider = request(dns=("a.example",), usages=(ExtendedKeyUsageOID.CODE_SIGNING,))
    assert violation(wider, both) is Rule.ALLOWED_EKUS
    unknown = request(dns=("a.example",), usages=(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,))
    with pytest.raises(ProfileViolation, match=r"2\.5\.29\.37\.0"):
        enforce(unknown, both)


def test_lifetime_is_the_validity_capped_by_max_ttl_seconds() -> None:
    req = request(dns=("a.example",))
    capped = replace(DEFAULT, max_ttl_seconds=30 * 86_400)
    assert enforce(req, capped).lifetime == timedelta(days=30)
    assert enforce(req, capped, validity=timedelta(days=7)).lifetime == timedelta(days=7)
    assert enforce(req, capped, ttl=timedelta(hours=1)).lifetime == timedelta(hours=1)
    assert enforce(req, DEFAULT, ttl=timedelta(days=400)).lifetime == timedelta(days=400)
    assert violation(req, capped, ttl=timedelta(days=31)) is Rule.MAX_TTL
    assert violation(req, capped, ttl=timedelta(0)) is Rule.MAX_TTL


def test_max_ttl_seconds_zero_means_no_cap() -> None:
    req = request(dns=("a.example",))
    uncapped = replace(DEFAULT, max_ttl_seconds=0)
    assert enforce(req, uncapped).lifetime == DEFAULT_VALIDITY
    assert enforce(req, uncapped, validity=timedelta(days=800)).lifetime == timedelta(days=800)
    assert enforce(req, uncapped, ttl=timedelta(days=3650)).lifetime == timedelta(days=3650)
    assert Profile.from_model(uncapped).max_ttl is None
    assert Profile.from_model(replace(DEFAULT, max_ttl_seconds=60)).max_ttl == timedelta(minutes=1)


def test_must_staple_comes_from_the_profile() -> None:
    staple = replace(DEFAULT, must_staple=True)
    assert enforce(request(dns=("a.example",)), staple).must_staple


def test_a_compiled_profile_enforces_as_its_model_does() -> None:
    model = replace(DEFAULT, required_san_patterns=(r".*\.internal",), max_ttl_seconds=3600)
    compiled = Profile.from_model(model)
    assert compiled.model is model
    assert [pattern.pattern for pattern in compiled.san_patterns] == [r".*\.internal"]
    inside = request(dns=("db.internal",))
    assert enforce(inside, compiled) == enforce(inside, model)
    assert violation(request(dns=("db.example",)), compiled) is Rule.SAN_PATTERNS
    assert violation(request(dns=("db.example",)), model) is Rule.SAN_PATTERNS


def test_usages_map_to_their_oids_and_back() -> None:
    assert eku_oid(ExtendedKeyUsage.SERVER_AUTH) == ExtendedKeyUsageOID.SERVER_AUTH
    assert eku_oid(ExtendedKeyUsage.TIME_STAMPING) == ExtendedKeyUsageOID.TIME_STAMPING
    for usage in ExtendedKeyUsage:
        assert eku_from_oid(eku_oid(usage)) is usage
    assert eku_from_oid(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE) is None


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"required_san_patterns": ("[unclosed",)},
            "required_san_patterns",
            "required_san_patterns\\[0\\] '\\[unclosed' is not a valid",
        ),
        (
            {"allowed_key_algorithms": ()},
            "allowed_key_algorithms",
            "allowed_key_algorithms is empty",
        ),
        ({"allowed_ekus": ()}, "allowed_ekus", "allowed_ekus is empty"),
        ({"max_ttl_seconds": -1}, "max_ttl_seconds", "max_ttl_seconds is -1; set it to"),
    ],
)
def test_invalid_profiles_are_refused_naming_the_field(
    fields: dict[str, object], field: str, message: str
) -> None:
    broken = CertificateProfile("profile-broken", "broken", **fields)  # type: ignore[arg-type]
    with pytest.raises(ProfileError, match=f"profile 'broken' {message}") as caught:
        Profile.from_model(broken)
    assert caught.value.field == field
    with pytest.raises(ProfileError, match=message):
        enforce(request(dns=("a.example",)), broken)


def test_a_profile_with_unhashable_fields_is_still_enforced() -> None:
    # A profile whose tuples came back from JSON as lists cannot be cached, only compiled.
    listed = replace(DEFAULT, required_san_patterns=[r"a\.example"])  # type: ignore[arg-type]
    assert enforce(request(dns=("a.example",)), listed).sans.dns == ("a.example",)
    assert violation(request(dns=("b.example",)), listed) is Rule.SAN_PATTERNS


@pytest.mark.parametrize("validity", [timedelta(0), timedelta(milliseconds=999)])
def test_a_leaf_validity_under_a_second_is_refused(validity: timedelta) -> None:
    with pytest.raises(PKIError, match=r"validity .* is under a second"):
        enforce(request(dns=("a.example",)), DEFAULT, validity=validity)
