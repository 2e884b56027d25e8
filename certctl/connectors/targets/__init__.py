"""Target connectors: one module per target type, each turning a config into a deploy plan.

``registry.load_connector(type, config)`` is the entry point. This package module stays
empty so that ``python -m certctl.connectors.targets.caddy_admin``, run as a hook on every
Caddy deploy, starts without importing pydantic and every connector.
"""
