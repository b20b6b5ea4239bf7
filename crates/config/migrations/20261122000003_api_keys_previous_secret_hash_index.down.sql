-- no-transaction
-- Reverts 20261122000003_api_keys_previous_secret_hash_index.sql without
-- blocking writes to api_keys. IF EXISTS: a run stopped part-way repeats
-- this file from the top.
DROP INDEX CONCURRENTLY IF EXISTS api_keys_previous_secret_hash;
