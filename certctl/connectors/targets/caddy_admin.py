"""Reload or check a running Caddy through its admin API: the Caddy connector's hooks.

The deploy engine runs hooks as argv, so API mode runs this module
(``python -m certctl.connectors.targets.caddy_admin reload http://localhost:2019``).
A reload posts Caddy's current config back to ``/load`` with ``Cache-Control:
must-revalidate``, which makes Caddy re-provision its apps even though the config is
unchanged, and so re-read the certificate files the engine just renamed into place. It
imports only the standard library so it starts quickly on every deploy.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT = 10.0


class AdminError(Exception):
    pass


def _call(request: urllib.request.Request) -> bytes:
    """The admin URL's scheme is http or https: ``CaddyConfig`` refuses anything else."""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise AdminError(f"{request.full_url} answered {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"{request.full_url} is unreachable ({reason})") from exc


def current_config(admin: str) -> bytes:
    body = _call(urllib.request.Request(f"{admin}/config/"))  # noqa: S310
    if body.strip() in {b"", b"null"}:
        raise AdminError(f"Caddy at {admin} has no config loaded; refusing to replace it")
    return body


def reload(admin: str) -> None:
    _call(
        urllib.request.Request(  # noqa: S310
            f"{admin}/load",
            data=current_config(admin),
            method="POST",
            headers={"Content-Type": "application/json", "Cache-Control": "must-revalidate"},
        )
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"reload", "check"}:
        print("usage: caddy_admin reload|check ADMIN_URL", file=sys.stderr)
        return 2
    action, admin = argv[0], argv[1].rstrip("/")
    try:
        if action == "reload":
            reload(admin)
        else:
            current_config(admin)
    except AdminError as exc:
        print(f"caddy admin {action}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
