"""The agent: generates keys on its host, submits CSRs, deploys certificates, reports.

It talks to the control plane only through the ``ControlPlane`` protocol
(``control_plane``) over the messages of ``certctl.protocol``, never through
``certctl.server``, ``certctl.store`` or ``certctl.services``: ``HttpControlPlane``
(``http``) is the product, and the fleet simulator supplies an in-process implementation.
``runner.AgentRunner`` is the process; ``process.run`` is what ``certctl agent`` calls.

Modules: ``connection`` (URL and TLS checks), ``files`` (private atomic writes),
``state`` (identity on disk), ``keystore`` (private keys by public key), ``issuance`` (key
and CSR for a job), ``deployment`` (one Deployment job), ``targets`` (a target's
connector with the agent's defaults).
"""
