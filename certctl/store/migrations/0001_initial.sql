-- certctl schema, version 1.
--
-- Enum columns hold the PascalCase strings of certctl/core/model.py and nothing else
-- (CHECK constraints). Ids use the "C" collation so keyset order is code-point order, the
-- same in every locale and in MemoryStore. Constraint names are PostgreSQL's defaults
-- (<table>_<columns>_key, _fkey, _pkey): certctl/store/rows.py maps them to messages.
-- Timestamps come from the application's clock, so there are no DEFAULT now() columns.

CREATE TABLE teams (
    id          text COLLATE "C" PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE owners (
    id      text COLLATE "C" PRIMARY KEY,
    name    text NOT NULL,
    email   text NOT NULL,
    team_id text COLLATE "C" REFERENCES teams (id)
);
CREATE INDEX owners_team_id_idx ON owners (team_id);

CREATE TABLE certificate_profiles (
    id                      text COLLATE "C" PRIMARY KEY,
    name                    text NOT NULL UNIQUE,
    description             text NOT NULL,
    allowed_key_algorithms  jsonb NOT NULL,
    max_ttl_seconds         integer NOT NULL,
    allowed_ekus            text[] NOT NULL CHECK (allowed_ekus <@ ARRAY[
        'ServerAuth', 'ClientAuth', 'CodeSigning', 'EmailProtection', 'TimeStamping']),
    required_san_patterns   text[] NOT NULL,
    spiffe_uri_pattern      text,
    allow_short_lived       boolean NOT NULL,
    must_staple             boolean NOT NULL,
    required_csr_attributes text[] NOT NULL,
    requires_approval       boolean NOT NULL,
    enabled                 boolean NOT NULL
);

CREATE TABLE renewal_policies (
    id                     text COLLATE "C" PRIMARY KEY,
    name                   text NOT NULL UNIQUE,
    renewal_window_days    integer NOT NULL CHECK (renewal_window_days BETWEEN 1 AND 365),
    auto_renew             boolean NOT NULL,
    max_retries            integer NOT NULL CHECK (max_retries BETWEEN 0 AND 10),
    retry_interval_seconds integer NOT NULL CHECK (retry_interval_seconds BETWEEN 60 AND 86400),
    alert_thresholds_days  integer[] NOT NULL,
    alert_severity_map     jsonb NOT NULL,
    alert_channels         jsonb NOT NULL,
    certificate_profile_id text COLLATE "C" REFERENCES certificate_profiles (id)
);
CREATE INDEX renewal_policies_certificate_profile_id_idx
    ON renewal_policies (certificate_profile_id);

-- config is the redacted copy; encrypted_secret is the sealed "secret" object
-- (certctl/store/secrets.py), bound to this row by the sealing's associated data.
CREATE TABLE issuers (
    id               text COLLATE "C" PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    type             text NOT NULL CHECK (type IN ('LocalCA')),
    config           jsonb NOT NULL,
    encrypted_secret bytea,
    enabled          boolean NOT NULL,
    last_tested_at   timestamptz
);

CREATE TABLE agents (
    id                text COLLATE "C" PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    hostname          text NOT NULL,
    key_hash          text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    registered_at     timestamptz NOT NULL,
    status            text NOT NULL CHECK (status IN ('Online', 'Offline')),
    last_heartbeat_at timestamptz,
    os                text NOT NULL,
    architecture      text NOT NULL,
    ip_address        text NOT NULL,
    version           text NOT NULL,
    retired_at        timestamptz,
    retired_reason    text
);

CREATE TABLE deployment_targets (
    id               text COLLATE "C" PRIMARY KEY,
    name             text NOT NULL,
    type             text NOT NULL CHECK (type IN (
        'NGINX', 'Apache', 'HAProxy', 'Traefik', 'Caddy', 'Envoy', 'Postfix', 'Dovecot')),
    agent_id         text COLLATE "C" NOT NULL REFERENCES agents (id),
    config           jsonb NOT NULL,
    encrypted_secret bytea,
    enabled          boolean NOT NULL,
    retired_at       timestamptz,
    retired_reason   text,
    UNIQUE (agent_id, name)
);

-- renewal_due_at is certctl.core.renewal.renewal_due_at of the newest version under the
-- certificate's policy, maintained by the store; NULL (like expires_at) until a version.
CREATE TABLE managed_certificates (
    id                     text COLLATE "C" PRIMARY KEY,
    name                   text NOT NULL UNIQUE,
    common_name            text NOT NULL,
    sans                   text[] NOT NULL,
    environment            text,
    owner_id               text COLLATE "C" NOT NULL REFERENCES owners (id),
    team_id                text COLLATE "C" REFERENCES teams (id),
    issuer_id              text COLLATE "C" NOT NULL REFERENCES issuers (id),
    renewal_policy_id      text COLLATE "C" NOT NULL REFERENCES renewal_policies (id),
    certificate_profile_id text COLLATE "C" REFERENCES certificate_profiles (id),
    status                 text NOT NULL CHECK (status IN (
        'Pending', 'Active', 'Expiring', 'Expired', 'RenewalInProgress', 'Failed', 'Revoked',
        'Archived')),
    expires_at             timestamptz,
    renewal_due_at         timestamptz,
    tags                   jsonb NOT NULL,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    last_renewal_at        timestamptz,
    last_deployment_at     timestamptz,
    revoked_at             timestamptz,
    revocation_reason      text CHECK (revocation_reason IN (
        'Unspecified', 'KeyCompromise', 'CACompromise', 'AffiliationChanged', 'Superseded',
        'CessationOfOperation', 'CertificateHold', 'PrivilegeWithdrawn')),
    CHECK ((expires_at IS NULL) = (renewal_due_at IS NULL))
);
-- Keyset pagination walks (created_at, id).
CREATE INDEX managed_certificates_created_at_id_idx ON managed_certificates (created_at, id);
-- The due-renewal query: only the statuses the scan acts on are indexed.
CREATE INDEX managed_certificates_renewal_due_idx ON managed_certificates (renewal_due_at, id)
    WHERE status IN ('Active', 'Expiring', 'Expired');
CREATE INDEX managed_certificates_expires_at_idx ON managed_certificates (expires_at);
CREATE INDEX managed_certificates_owner_id_idx ON managed_certificates (owner_id);
CREATE INDEX managed_certificates_team_id_idx ON managed_certificates (team_id);
CREATE INDEX managed_certificates_issuer_id_idx ON managed_certificates (issuer_id);
CREATE INDEX managed_certificates_renewal_policy_id_idx
    ON managed_certificates (renewal_policy_id);
CREATE INDEX managed_certificates_certificate_profile_id_idx
    ON managed_certificates (certificate_profile_id);

CREATE TABLE certificate_target_mappings (
    certificate_id text COLLATE "C" NOT NULL REFERENCES managed_certificates (id),
    target_id      text COLLATE "C" NOT NULL REFERENCES deployment_targets (id),
    PRIMARY KEY (certificate_id, target_id)
);
CREATE INDEX certificate_target_mappings_target_id_idx ON certificate_target_mappings (target_id);

CREATE TABLE certificate_versions (
    id                 text COLLATE "C" PRIMARY KEY,
    certificate_id     text COLLATE "C" NOT NULL REFERENCES managed_certificates (id),
    serial_number      text NOT NULL,
    not_before         timestamptz NOT NULL,
    not_after          timestamptz NOT NULL,
    fingerprint_sha256 text NOT NULL UNIQUE,
    pem_chain          text NOT NULL,
    key_algorithm      text NOT NULL CHECK (key_algorithm IN ('ECDSA', 'RSA', 'Ed25519')),
    key_size           integer NOT NULL,
    created_at         timestamptz NOT NULL,
    csr_pem            text,
    CHECK (not_after > not_before)
);
-- "Latest version" = newest (created_at, id) of the certificate.
CREATE INDEX certificate_versions_latest_idx
    ON certificate_versions (certificate_id, created_at DESC, id DESC);

CREATE TABLE jobs (
    id                       text COLLATE "C" PRIMARY KEY,
    type                     text NOT NULL CHECK (type IN ('Issuance', 'Renewal', 'Deployment')),
    certificate_id           text COLLATE "C" NOT NULL REFERENCES managed_certificates (id),
    status                   text NOT NULL CHECK (status IN (
        'Pending', 'AwaitingCSR', 'AwaitingApproval', 'Running', 'Completed', 'Failed',
        'Cancelled')),
    created_at               timestamptz NOT NULL,
    scheduled_at             timestamptz NOT NULL,
    status_changed_at        timestamptz NOT NULL,
    target_id                text COLLATE "C" REFERENCES deployment_targets (id),
    agent_id                 text COLLATE "C" REFERENCES agents (id),
    attempts                 integer NOT NULL,
    max_attempts             integer NOT NULL CHECK (max_attempts >= 1),
    retry_interval_seconds   integer NOT NULL CHECK (retry_interval_seconds BETWEEN 60 AND 86400),
    last_error               text,
    next_retry_at            timestamptz,
    started_at               timestamptz,
    completed_at             timestamptz,
    verification_status      text CHECK (verification_status IN (
        'Pending', 'Success', 'Failed', 'Skipped')),
    verified_at              timestamptz,
    verification_fingerprint text,
    verification_error       text,
    CHECK (attempts BETWEEN 0 AND max_attempts)
);
CREATE INDEX jobs_created_at_id_idx ON jobs (created_at, id);
CREATE INDEX jobs_certificate_id_idx ON jobs (certificate_id);
CREATE INDEX jobs_target_id_idx ON jobs (target_id);
CREATE INDEX jobs_agent_id_idx ON jobs (agent_id);
-- Claiming: oldest scheduled Pending first, skipping rows other claimers hold.
CREATE INDEX jobs_pending_idx ON jobs (scheduled_at, id) WHERE status = 'Pending';
-- Reapers and the retry loop.
CREATE INDEX jobs_awaiting_idx ON jobs (status_changed_at, id)
    WHERE status IN ('AwaitingCSR', 'AwaitingApproval');
CREATE INDEX jobs_running_idx ON jobs (status_changed_at, id) WHERE status = 'Running';
CREATE INDEX jobs_retry_idx ON jobs (next_retry_at, id) WHERE status = 'Failed';

CREATE TABLE certificate_revocations (
    id              text COLLATE "C" PRIMARY KEY,
    certificate_id  text COLLATE "C" NOT NULL REFERENCES managed_certificates (id),
    serial_number   text NOT NULL,
    reason          text NOT NULL CHECK (reason IN (
        'Unspecified', 'KeyCompromise', 'CACompromise', 'AffiliationChanged', 'Superseded',
        'CessationOfOperation', 'CertificateHold', 'PrivilegeWithdrawn')),
    revoked_by      text NOT NULL,
    revoked_at      timestamptz NOT NULL,
    issuer_id       text COLLATE "C" NOT NULL REFERENCES issuers (id),
    issuer_notified boolean NOT NULL,
    UNIQUE (issuer_id, serial_number)
);
CREATE INDEX certificate_revocations_certificate_id_idx
    ON certificate_revocations (certificate_id);

CREATE TABLE audit_events (
    id            text COLLATE "C" PRIMARY KEY,
    actor         text NOT NULL,
    actor_type    text NOT NULL CHECK (actor_type IN ('User', 'System', 'Agent')),
    action        text NOT NULL,
    resource_type text NOT NULL,
    resource_id   text NOT NULL,
    timestamp     timestamptz NOT NULL,
    details       jsonb NOT NULL
);
CREATE INDEX audit_events_timestamp_id_idx ON audit_events (timestamp, id);
CREATE INDEX audit_events_resource_idx ON audit_events (resource_type, resource_id);

-- Append-only: rows can be inserted and read, never changed or removed, whoever asks.
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
