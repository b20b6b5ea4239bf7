-- Reverts 20261122000001_initial_schema.sql: drops every table it created
-- (their indexes and constraints go with them), leaving an empty database
-- with only the migrator's bookkeeping tables.
--
-- No usage record is lost silently: usage_events is the only place usage
-- lives at this point (every later migration is reverted first), so this
-- refuses while it holds rows. Export them, delete them, and run down again.
-- Keys, providers and routes are configuration the operator asked to drop
-- with the schema.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM usage_events) THEN
        RAISE EXCEPTION 'usage_events still holds usage records, which reverting the initial schema would destroy; export and delete them first';
    END IF;
END
$$;

DROP TABLE nodes, usage_events, changes, route_targets, routes, providers, api_keys;
