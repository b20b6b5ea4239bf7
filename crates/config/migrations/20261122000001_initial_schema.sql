-- The initial obleth schema: API keys, providers, routes, the change log that feeds
-- the gateways' key caches, usage events and the fleet of running nodes.

-- API keys. A key is shown to its owner once as obk_<public_id>_<secret>; only the
-- SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    id             UUID PRIMARY KEY,
    public_id      TEXT NOT NULL UNIQUE,
    secret_hash    BYTEA NOT NULL UNIQUE,
    name           TEXT NOT NULL DEFAULT '',
    owner          TEXT,
    -- Model names or globs (`gpt-4o*`); an empty list allows every routed model.
    allowed_models TEXT[] NOT NULL DEFAULT '{}',
    rpm_limit      INTEGER,
    tpm_limit      INTEGER,
    token_budget   BIGINT,
    expires_at     TIMESTAMPTZ,
    revoked_at     TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_secret_hash_is_sha256 CHECK (octet_length(secret_hash) = 32),
    CONSTRAINT api_keys_rpm_limit_positive CHECK (rpm_limit IS NULL OR rpm_limit > 0),
    CONSTRAINT api_keys_tpm_limit_positive CHECK (tpm_limit IS NULL OR tpm_limit > 0),
    CONSTRAINT api_keys_token_budget_not_negative CHECK (token_budget IS NULL OR token_budget >= 0)
);

-- The gateways warm their caches from the keys that can still be used.
CREATE INDEX api_keys_active ON api_keys (id) WHERE revoked_at IS NULL;

-- Upstream providers. The credential is never stored: credential_ref says where
-- the gateway reads it (`env:OPENAI_API_KEY` or `file:/run/secrets/openai`).
CREATE TABLE providers (
    id             UUID PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL,
    base_url       TEXT NOT NULL,
    credential_ref TEXT,
    timeout_ms     INTEGER NOT NULL DEFAULT 60000,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT providers_kind_known CHECK (kind IN ('openai', 'mock')),
    CONSTRAINT providers_timeout_positive CHECK (timeout_ms > 0)
);

-- Routes: a public model name and the providers that serve it, in order.
CREATE TABLE routes (
    id         UUID PRIMARY KEY,
    model      TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE route_targets (
    route_id       UUID NOT NULL REFERENCES routes (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    provider_id    UUID NOT NULL REFERENCES providers (id) ON DELETE RESTRICT,
    -- The model name sent upstream; NULL keeps the client's.
    upstream_model TEXT,
    PRIMARY KEY (route_id, position)
);

CREATE INDEX route_targets_provider ON route_targets (provider_id);

-- The change log. Every admin mutation appends a row in the transaction that
-- makes the change, then NOTIFYs; gateways catch up from the last seq they saw.
-- Writers serialize on a transaction lock so seq order is commit order.
CREATE TABLE changes (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity     TEXT NOT NULL,
    entity_id  TEXT NOT NULL,
    op         TEXT NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT changes_entity_known CHECK (entity IN ('api_key', 'provider', 'route', 'setting')),
    CONSTRAINT changes_op_known CHECK (op IN ('insert', 'update', 'delete'))
);

CREATE INDEX changes_changed_at ON changes (changed_at);

-- One row per proxied request. request_id makes a retried batch insert idempotent.
-- No foreign key to api_keys: usage outlives deleted keys and inserts stay cheap.
CREATE TABLE usage_events (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id        UUID NOT NULL UNIQUE,
    key_id            UUID,
    model             TEXT NOT NULL,
    provider          TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    total_tokens      INTEGER,
    status            SMALLINT NOT NULL,
    latency_ms        INTEGER NOT NULL,
    streamed          BOOLEAN NOT NULL DEFAULT FALSE,
    node_id           TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX usage_events_key_time ON usage_events (key_id, created_at);
CREATE INDEX usage_events_time ON usage_events (created_at);

-- The fleet: every gateway, admin and migrator run that registered itself.
CREATE TABLE nodes (
    node_id        TEXT PRIMARY KEY,
    service        TEXT NOT NULL,
    version        TEXT NOT NULL,
    git_commit     TEXT,
    hostname       TEXT,
    schema_version BIGINT,
    ready          BOOLEAN NOT NULL DEFAULT FALSE,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen      TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at     TIMESTAMPTZ,
    CONSTRAINT nodes_service_known CHECK (service IN ('gateway', 'admin', 'migrator'))
);

CREATE INDEX nodes_last_seen ON nodes (last_seen) WHERE stopped_at IS NULL;
