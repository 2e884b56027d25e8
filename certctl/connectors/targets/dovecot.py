"""Dovecot: certificate with its chain appended (unless ``chain_path``), key 0600.

Defaults (the earlier implementation's "dovecot" mode of its Postfix connector):
``/etc/dovecot/certs/cert.pem`` and ``key.pem``, ``doveadm reload``, ``doveconf -n``;
new certificates 0644, owned by ``dovecot``. Verification uses implicit TLS (imaps,
port 993), for the reason given in ``postfix``.
"""

from __future__ import annotations

from certctl.connectors.targets.fields import HostPort
from certctl.connectors.targets.local import LocalFiles, LocalFilesConfig, conventional
from certctl.core.model import TargetType


class Dovecot(LocalFiles[LocalFilesConfig]):
    target_type = TargetType.DOVECOT
    schema = LocalFilesConfig
    config_defaults = conventional("/etc/dovecot/certs", "doveadm reload", "doveconf -n")
    key_mode = 0o600
    owners = ("dovecot",)
    default_endpoint = HostPort("127.0.0.1", 993)
