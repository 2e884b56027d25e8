"""NGINX: certificate (with its chain unless ``chain_path`` is set), key 0640, reload.

Defaults from the earlier implementation: key mode 0640 always, new certificates 0644,
files owned by ``nginx`` or else ``www-data``. ``reload_command`` and ``validate_command``
are required (conventionally ``nginx -s reload`` and ``nginx -t``): how NGINX is run on a
host (systemd, a container, a custom prefix) is not something we can guess safely.
"""

from __future__ import annotations

from collections.abc import Mapping

from certctl.connectors.targets.base import write_probe
from certctl.connectors.targets.fields import Program
from certctl.connectors.targets.local import LocalFiles, LocalFilesConfig
from certctl.core.model import TargetType
from certctl.deploy import Command


class NginxConfig(LocalFilesConfig):
    binary: Program = "nginx"


class Nginx(LocalFiles[NginxConfig]):
    target_type = TargetType.NGINX
    schema = NginxConfig
    key_mode = 0o640
    owners = ("nginx", "www-data")

    def probe(self, staged: Mapping[str, str], workdir: str) -> Command:
        """``nginx -t`` on a one-server config loading the staged certificate and key, so
        NGINX's own TLS library accepts them (key type and size, format) before a deploy."""
        config = self.config
        conf = write_probe(
            workdir,
            "probe-nginx.conf",
            f"pid {workdir}/nginx.pid;\nevents {{}}\nhttp {{\n  server {{\n"
            "    listen 127.0.0.1:9 ssl;\n"
            f"    ssl_certificate {staged[config.cert_path]};\n"
            f"    ssl_certificate_key {staged[config.key_path]};\n  }}\n}}\n",
        )
        return (config.binary, "-t", "-q", "-e", "stderr", "-p", workdir, "-c", conf)
