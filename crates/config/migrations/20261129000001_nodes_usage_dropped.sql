-- What each gateway counted as dropped usage over its life, by reason
-- (`obleth_usage_dropped_total`), written when it signs off, with the
-- `started_at` of the life that wrote it: a node id that a later process
-- reuses (the previous release never writes these columns) keeps stale
-- counts that no longer match its `started_at`, and readers ignore them.
-- A record lost at shutdown is counted after the pod has left its
-- Service's endpoints, where no scrape sees it; the admin exports these
-- sums instead (`obleth_fleet_usage_dropped_at_stop`).
--
-- Expand: nullable columns without a default change only the catalog
-- (a brief ACCESS EXCLUSIVE lock on nodes, under lock_timeout). The
-- previous release never names them.
ALTER TABLE nodes
    ADD COLUMN usage_dropped JSONB,
    ADD COLUMN usage_dropped_life TIMESTAMPTZ;
