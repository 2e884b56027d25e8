"""Real servers to deploy to (NGINX, HAProxy, Apache, Caddy, Postfix, Dovecot, Traefik,
Envoy): one ``Sidecar`` interface, two launchers.

- ``servers``: what each server is (packages, image, ports, commands, connector config),
  the ``Sidecar`` interface every launcher implements, and the config templates shipped
  in ``templates/`` (package data, so an installed wheel has them too);
- ``launchers``: ``launch(name, ...)``, which runs a server in a container when a Docker
  engine answers and as a local process otherwise;
- ``probes``: what a client sees (the served leaf, by a stdlib handshake), and a decoy
  listener that must fail verification.

Each module lists its public names in ``__all__``; tests import them from there.
"""
