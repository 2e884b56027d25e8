"""Traefik (file provider): full chain and key in ``cert_dir``, no reload command.

Traefik reloads TLS certificates when its file provider sees a change in the directory it
watches, so ``cert_dir`` should be that directory (``providers.file.directory`` with
``watch: true``), holding a dynamic config whose ``tls.certificates`` entry names
``cert_file`` and ``key_file``. The reload is asynchronous; the post-deploy handshake, with
its backoff, is what confirms it happened, and a mismatch rolls the files back.
Defaults: ``cert.pem`` 0644 and ``key.pem`` 0600, explicit.
"""

from __future__ import annotations

from certctl.connectors.targets.local import CertDir, CertDirConfig
from certctl.core.model import TargetType


class TraefikConfig(CertDirConfig):
    pass


class Traefik(CertDir[TraefikConfig]):
    target_type = TargetType.TRAEFIK
    schema = TraefikConfig
