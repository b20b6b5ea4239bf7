-- no-transaction
-- Reads of the rollup queue by hour, through an index built without
-- blocking writes.
--
-- Every read adds the queue's unfolded rows to the rollups, and without an
-- index each read scanned the queue's whole heap. The heap does not shrink
-- when the fold deletes its rows: after a backlog (100 million rows loaded,
-- or a fold that stopped for a while) it held 2.5 GB of empty pages, which
-- VACUUM cannot give back while writers keep filling the pages it freed,
-- and every admin report and every budget read took 0.7 s reading them
-- (bench/LEDGER.md). With the index, a read of a span of hours reads that
-- span's live rows. Rows arrive in hour order, so an insert lands on the
-- index's rightmost page.
--
-- obleth_queued_usage_totals (20261128000006), which a quota lease calls
-- for a budget counter, names its period's hours for the index; the same
-- answers: a row belongs to the period that starts at period_start exactly
-- when its hour is in [period_start, period_start + the period's length),
-- and the total's period is every hour. Both releases' leases call it.
--
-- Expand. No transaction: each statement commits alone and the file is
-- re-run from the top after a failure part-way, so every statement is
-- idempotent; the DROP clears a half-built index left by an interrupted
-- earlier attempt.
DROP INDEX CONCURRENTLY IF EXISTS usage_rollup_queue_hour;
CREATE INDEX CONCURRENTLY IF NOT EXISTS usage_rollup_queue_hour ON usage_rollup_queue (hour);

CREATE OR REPLACE FUNCTION obleth_queued_usage_totals(subject UUID, period TEXT,
    period_start TIMESTAMPTZ, OUT requests BIGINT, OUT tokens BIGINT, OUT cost_micros BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(sum(q.requests), 0)::bigint, COALESCE(sum(q.total_tokens), 0)::bigint,
           COALESCE(sum(q.cost_micros), 0)::bigint
    FROM usage_rollup_queue q
    WHERE q.totals AND (q.key_id = subject OR q.team_id = subject)
      AND q.hour >= CASE period WHEN 'total' THEN '-infinity'::timestamptz ELSE period_start END
      AND q.hour < CASE period WHEN 'total' THEN 'infinity'::timestamptz
              ELSE ((period_start AT TIME ZONE 'UTC') + ('1 ' || period)::interval)
                   AT TIME ZONE 'UTC'
          END
      AND CASE period WHEN 'total' THEN 'epoch'::timestamptz
              ELSE date_trunc(period, q.hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
          END = period_start
$$;
