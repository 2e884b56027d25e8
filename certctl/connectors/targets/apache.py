"""Apache httpd: certificate, chain (required, as in the earlier implementation) and key.

Key mode 0600 always; new certificates 0644, owned by ``apache``, ``www-data`` or
``httpd``, whichever exists first. Commands are required (conventionally
``apachectl configtest`` and ``apachectl graceful``). There is no dry-run probe: ``httpd -t``
checks only that the configured files exist, not that they load, so the staged material
is checked in-process and the validate command runs against the live configuration.
"""

from __future__ import annotations

from certctl.connectors.targets.fields import AbsolutePath
from certctl.connectors.targets.local import LocalFiles, LocalFilesConfig
from certctl.core.model import TargetType


class ApacheConfig(LocalFilesConfig):
    chain_path: AbsolutePath


class Apache(LocalFiles[ApacheConfig]):
    target_type = TargetType.APACHE
    schema = ApacheConfig
    key_mode = 0o600
    owners = ("apache", "www-data", "httpd")
