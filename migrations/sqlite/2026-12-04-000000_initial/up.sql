-- Ids are text (UUIDs chosen by the broker, or the platform's own ids), so
-- both backends share one schema shape. Timestamps are UTC without zone.

CREATE TABLE acme_accounts (
    id TEXT PRIMARY KEY,
    directory_url TEXT NOT NULL UNIQUE,
    -- instant-acme AccountCredentials as JSON, AES-256-GCM encrypted
    credentials_encrypted BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE service_instances (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    organization_guid TEXT NOT NULL,
    space_guid TEXT NOT NULL,
    context TEXT,
    -- the parameters as the platform sent them (JSON), echoed by GET
    parameters TEXT NOT NULL,
    -- normalized domain list (JSON array of strings)
    domains TEXT NOT NULL,
    -- provisioning | provisioned | failed | deprovisioning | deprovisioned
    state TEXT NOT NULL,
    current_certificate_id TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- One row per domain held by a live instance: the unique key is what stops
-- two instances from claiming the same domain.
CREATE TABLE instance_domains (
    domain TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES service_instances(id)
);
CREATE INDEX instance_domains_instance ON instance_domains(instance_id);

CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES service_instances(id),
    -- provision | update | deprovision | renew
    kind TEXT NOT NULL,
    -- in progress | succeeded | failed
    state TEXT NOT NULL,
    next_step INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    description TEXT NOT NULL,
    last_error TEXT,
    -- the request that started it (JSON), e.g. the new domains of an update
    request TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE INDEX operations_instance ON operations(instance_id, created_at);
CREATE INDEX operations_unfinished ON operations(state) WHERE state = 'in progress';

CREATE TABLE certificates (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES service_instances(id),
    -- the operation that ordered it
    operation_id TEXT NOT NULL,
    -- JSON array of the domains in the order
    domains TEXT NOT NULL,
    private_key_encrypted BLOB,
    order_url TEXT,
    leaf_pem TEXT,
    chain_pem TEXT,
    expires_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    issued_at TIMESTAMP
);
CREATE INDEX certificates_instance ON certificates(instance_id);

CREATE TABLE challenges (
    id TEXT PRIMARY KEY,
    certificate_id TEXT NOT NULL REFERENCES certificates(id),
    domain TEXT NOT NULL,
    authorization_url TEXT NOT NULL,
    challenge_url TEXT NOT NULL,
    txt_name TEXT NOT NULL,
    txt_value TEXT NOT NULL,
    answered_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX challenges_certificate ON challenges(certificate_id);

-- Every DNS record the broker wrote (recorded before it is written), so that
-- clean-up removes exactly these.
CREATE TABLE dns_records (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES service_instances(id),
    name TEXT NOT NULL,
    record_type TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX dns_records_instance ON dns_records(instance_id);

CREATE TABLE bindings (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES service_instances(id),
    service_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    app_guid TEXT,
    bind_resource TEXT,
    parameters TEXT NOT NULL,
    certificate_id TEXT NOT NULL REFERENCES certificates(id),
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX bindings_instance ON bindings(instance_id);
