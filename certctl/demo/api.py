"""The demo's REST client: the operator API key over HTTPS, trusting only the demo's CA.

Everything the demo shows or changes goes through this client, exactly as an operator's
``curl`` would; the demo never reads the database.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from certctl.core.errors import CertctlError
from certctl.testing.server import trusting

RATE_LIMIT_RETRIES = 10


class ApiError(CertctlError):
    """The control plane refused a call or could not be reached; the message says which."""


class Api:
    def __init__(self, url: str, ca_path: Path, key: str, *, timeout: float = 30) -> None:
        self.url = url
        self._client = httpx.Client(
            base_url=url,
            verify=trusting(ca_path),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, **params: str | int) -> Any:
        return self._send("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._send("POST", path, json=body)

    def items(self, path: str, **params: str | int) -> list[dict[str, Any]]:
        """Every item of a list endpoint, following ``next_cursor``."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.get(path, **params, **({"cursor": cursor} if cursor else {}))
            found.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        for _ in range(RATE_LIMIT_RETRIES):
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise ApiError(f"{method} {path} failed: {exc}") from exc
            if response.status_code != 429:
                break
            time.sleep(min(float(response.headers.get("Retry-After", "1")), 5.0))
        if not response.is_success:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiError(f"{method} {path} answered {response.status_code}: {message}")
        return response.json()
