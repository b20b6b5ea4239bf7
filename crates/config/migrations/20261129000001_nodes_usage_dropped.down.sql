-- Reverts 20261129000001_nodes_usage_dropped.sql: the drop counts of
-- stopped gateways go with the columns. Only the catalog changes (a brief
-- ACCESS EXCLUSIVE lock on nodes, under lock_timeout); this release's
-- sign-offs fall back to recording the stop without the counts.
ALTER TABLE nodes
    DROP COLUMN usage_dropped,
    DROP COLUMN usage_dropped_life;
