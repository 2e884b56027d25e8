"""The OpenAPI document's builder: quart-schema's, plus answers that are not JSON.

quart-schema documents every answer as ``application/json``; a CRL or the Prometheus
text is not, and a client (or schemathesis) reading the document must be told the real
media type instead of trying to parse DER as JSON.
"""

from __future__ import annotations

import inspect
from typing import Any

from quart_schema import OpenAPIProvider

from certctl.server.schemas import OtherMedia


class CertctlOpenAPI(OpenAPIProvider):
    def build_response_object(
        self, model: Any, headers_model: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if isinstance(model, type) and issubclass(model, OtherMedia):
            body = {"schema": {"type": "string", "format": "binary"}}
            description = inspect.getdoc(model) or ""
            return {"content": {model.media_type: body}, "description": description}, {}
        built: tuple[dict[str, Any], dict[str, Any]] = super().build_response_object(
            model, headers_model
        )
        return built
