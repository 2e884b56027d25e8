"""Connectors: issuers that sign certificates and targets that deploy them.

Each connector is one module that turns its configuration into calls on ``certctl.pki``
(issuers) or into a deploy plan (targets); services pick connectors by type.
"""
