"""Postfix: certificate with its chain appended (unless ``chain_path``), key 0600.

The earlier implementation's defaults, which it applied only in a method the agent never
called; here they apply whenever a config is loaded: ``/etc/postfix/certs/cert.pem`` and
``key.pem``, ``postfix reload``, ``postfix check``. New certificates 0644, owned by
``postfix`` (``_postfix`` on macOS).

Verification handshakes with implicit TLS (smtps, port 465 by default): the deploy
engine's verifier speaks TLS from the first byte, so a STARTTLS-only listener on 25 or
587 cannot be checked; point ``post_deploy_verify.endpoint`` at a wrapper-mode listener.
"""

from __future__ import annotations

from certctl.connectors.targets.fields import HostPort
from certctl.connectors.targets.local import LocalFiles, LocalFilesConfig, conventional
from certctl.core.model import TargetType


class Postfix(LocalFiles[LocalFilesConfig]):
    target_type = TargetType.POSTFIX
    schema = LocalFilesConfig
    config_defaults = conventional("/etc/postfix/certs", "postfix reload", "postfix check")
    key_mode = 0o600
    owners = ("postfix", "_postfix")
    default_endpoint = HostPort("127.0.0.1", 465)
