-- Reverts 20261122000002_key_rotation_and_settings.sql: the shared settings
-- table and the rotated key's previous secret. A key rotated within its
-- grace period keeps only its new secret; maintenance mode and the other
-- shared settings are forgotten, as the release before them never had them.
-- 20261122000003's index on previous_secret_hash is reverted before this.
DROP TABLE settings;

-- One ALTER, so api_keys is locked (ACCESS EXCLUSIVE, catalog only) once.
ALTER TABLE api_keys
    DROP COLUMN previous_expires_at,
    DROP COLUMN previous_secret_hash;
