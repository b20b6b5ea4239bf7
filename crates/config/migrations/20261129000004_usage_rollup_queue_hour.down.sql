-- no-transaction
-- Reverts 20261129000004_usage_rollup_queue_hour.sql without blocking
-- writes to usage_rollup_queue: obleth_queued_usage_totals as
-- 20261128000006 made it (the same answers, the queue read whole), then
-- the index. Each statement is idempotent: a run stopped part-way repeats
-- this file from the top.
CREATE OR REPLACE FUNCTION obleth_queued_usage_totals(subject UUID, period TEXT,
    period_start TIMESTAMPTZ, OUT requests BIGINT, OUT tokens BIGINT, OUT cost_micros BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(sum(q.requests), 0)::bigint, COALESCE(sum(q.total_tokens), 0)::bigint,
           COALESCE(sum(q.cost_micros), 0)::bigint
    FROM usage_rollup_queue q
    WHERE q.totals AND (q.key_id = subject OR q.team_id = subject)
      AND CASE period WHEN 'total' THEN 'epoch'::timestamptz
              ELSE date_trunc(period, q.hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
          END = period_start
$$;

DROP INDEX CONCURRENTLY IF EXISTS usage_rollup_queue_hour;
