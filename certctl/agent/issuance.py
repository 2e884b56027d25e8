"""An AwaitingCSR job's key and CSR, made on this host so the key never leaves it.

The control plane sends the profile's first allowed key rule as an algorithm and a
minimum size; we generate the smallest key we can that meets it (an RSA minimum of 2560
gets RSA 3072), since a larger key only costs handshake time on every connection.
"""

from __future__ import annotations

from certctl.pki.csr import build_csr
from certctl.pki.errors import PKIError
from certctl.pki.keys import GENERATED_SPECS, KeySpec, SigningKey, generate_key
from certctl.pki.names import SubjectAltNames, from_text
from certctl.protocol import WorkItem


def key_spec_for(item: WorkItem) -> KeySpec:
    """Raises ``PKIError`` when no key we generate meets the rule."""
    fitting = [
        spec
        for spec in GENERATED_SPECS
        if spec.algorithm is item.key_algorithm and spec.size >= item.key_size
    ]
    if not fitting:
        choices = ", ".join(str(spec) for spec in GENERATED_SPECS)
        raise PKIError(
            f"job {item.job_id} asks for a {item.key_algorithm} key of at least {item.key_size} "
            f"bits, which this agent cannot generate; allow one of {choices} in the profile."
        )
    return min(fitting, key=lambda spec: spec.size)


def subject_alt_names(item: WorkItem) -> SubjectAltNames:
    """The job's SANs; the common name alone when it lists none, since clients match
    names against SANs only."""
    names = SubjectAltNames()
    for name in item.sans or (item.common_name,):
        names = names.union(from_text(name))
    return names


def new_key(item: WorkItem) -> SigningKey:
    """Blocking (RSA 4096 takes about a second): run it in a worker thread."""
    return generate_key(key_spec_for(item))


def csr_pem(item: WorkItem, key: SigningKey) -> str:
    """Raises ``PKIError`` for a name that cannot go into a CSR."""
    try:
        pem = build_csr(key, common_name=item.common_name, sans=subject_alt_names(item))
    except ValueError as exc:  # cryptography refusing a name (PKIError is a ValueError too)
        raise PKIError(
            f"job {item.job_id} names cannot go into a CSR ({exc}); fix the certificate's "
            "common name and SANs."
        ) from exc
    return pem.decode("ascii")
