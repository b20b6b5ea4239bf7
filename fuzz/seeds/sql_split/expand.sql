-- Key rotation and shared settings.
--
-- A rotated key gets a new secret; the previous one stays valid until
-- previous_expires_at, so clients can switch without an outage. Old releases
-- never read these columns, so this is an expand migration.
ALTER TABLE api_keys ADD COLUMN previous_secret_hash BYTEA;
ALTER TABLE api_keys ADD COLUMN previous_expires_at TIMESTAMPTZ;

-- Settings that travel to every gateway through the change feed (entity
-- 'setting'), such as maintenance mode.
CREATE TABLE settings (
    name       TEXT PRIMARY KEY,
    value      JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
