-- Reverts 20261128000007_nodes_release_schema.sql. Only the catalog
-- changes (a brief ACCESS EXCLUSIVE lock on nodes, under lock_timeout);
-- registrations of this release would fail after it, which is why `down`
-- refuses while a live node's release requires this migration.
ALTER TABLE nodes DROP COLUMN release_schema;
