"""The certificate profile a certificate is issued under: its own, or the default."""

from __future__ import annotations

from typing import Final

from certctl.core.model import CertificateProfile, ManagedCertificate
from certctl.services.context import Services

DEFAULT_PROFILE: Final = CertificateProfile(id="", name="default")
"""What an unprofiled certificate may be issued as: ECDSA P-256+/RSA 2048+, serverAuth, no
approval step."""


async def profile_of(services: Services, cert: ManagedCertificate) -> CertificateProfile:
    if cert.certificate_profile_id is None:
        return DEFAULT_PROFILE
    return await services.store.get_profile(cert.certificate_profile_id)
