-- no-transaction
-- Lookups by a rotated key's previous secret, built without blocking writes.
-- The DROP clears a half-built index left by an interrupted earlier attempt.
DROP INDEX CONCURRENTLY IF EXISTS api_keys_previous_secret_hash;
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS api_keys_previous_secret_hash
    ON api_keys (previous_secret_hash) WHERE previous_secret_hash IS NOT NULL;
