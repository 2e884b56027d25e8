-- certctl schema, version 2: the generic File target type (certctl/connectors/targets/file.py).
--
-- The column CHECK of 0001 has PostgreSQL's default name; it is replaced by one under the
-- same name, so the type column still holds exactly the values of TargetType.

ALTER TABLE deployment_targets DROP CONSTRAINT deployment_targets_type_check;
ALTER TABLE deployment_targets ADD CONSTRAINT deployment_targets_type_check CHECK (type IN (
    'NGINX', 'Apache', 'HAProxy', 'Traefik', 'Caddy', 'Envoy', 'Postfix', 'Dovecot', 'File'));
