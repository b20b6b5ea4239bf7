-- Reverts 20261128000002_usage_ledger.sql: the ledger, its partitions,
-- the hourly rollups, the rollup queue and their functions, and
-- obleth_quota_lease as 20261128000001 created it.
--
-- No usage record is lost. 20261128000003's down script moved every ledger
-- row the previous release's usage_events lacked back into it; rows a new
-- gateway wrote to the ledger since (a `down --force` past it) are moved
-- back here the same way, and the file refuses, changing nothing, if a
-- ledger row still has no twin in usage_events. The queue's rows that count
-- for the running totals are folded into usage_totals first (the previous
-- release never folds), so budgets stay exact; the hourly rollups are sums
-- of the rows and go with the ledger.
--
-- Locks: the ledger's tables ACCESS EXCLUSIVE (only new gateways use
-- them), usage_events SHARE ROW EXCLUSIVE (the previous release's inserts
-- wait, its reads go on) until the commit, all under lock_timeout.
LOCK TABLE usage_ledger, usage_rollup_queue, usage_hourly IN ACCESS EXCLUSIVE MODE;
LOCK TABLE usage_events IN SHARE ROW EXCLUSIVE MODE;

DO $$
BEGIN
    WHILE obleth_fold_usage(100000) > 0 LOOP
    END LOOP;
END
$$;

-- The moved rows were counted when the ledger queued them (folded just
-- above): usage_events' own totals trigger must not count them again.
ALTER TABLE usage_events DISABLE TRIGGER usage_events_add_totals;

INSERT INTO usage_events (request_id, key_id, model, provider, prompt_tokens,
    completion_tokens, total_tokens, status, latency_ms, streamed, node_id, created_at,
    cost_micros, estimated, team_id)
SELECT l.request_id, l.key_id, l.model, l.provider, l.prompt_tokens, l.completion_tokens,
       l.total_tokens, l.status, l.latency_ms, l.streamed, l.node_id, l.created_at,
       l.cost_micros, l.estimated, l.team_id
FROM usage_ledger l
WHERE NOT EXISTS (SELECT 1 FROM usage_events e WHERE e.request_id = l.request_id)
ORDER BY l.id
ON CONFLICT (request_id) DO NOTHING;

ALTER TABLE usage_events ENABLE TRIGGER usage_events_add_totals;

DO $$
DECLARE
    missing BIGINT;
BEGIN
    SELECT count(*) INTO missing FROM usage_ledger l
    WHERE NOT EXISTS (SELECT 1 FROM usage_events e
                      WHERE e.request_id = l.request_id AND e.created_at = l.created_at);
    IF missing > 0 THEN
        RAISE EXCEPTION '% usage_ledger rows share a request_id with another usage_events row and cannot be moved back; reverting would lose them', missing;
    END IF;
END
$$;

-- obleth_quota_lease as 20261128000001 created it, before it read the queue.
CREATE OR REPLACE FUNCTION obleth_quota_lease(
    subjects UUID[], dimensions TEXT[], windows TIMESTAMPTZ[], periods TEXT[],
    charges BIGINT[], wants BIGINT[], limits BIGINT[]
) RETURNS TABLE (idx INTEGER, new_used BIGINT, granted BIGINT, ceiling BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    i INTEGER;
    cur BIGINT;
    prev BIGINT;
    overlap DOUBLE PRECISION;
    ceil_ BIGINT;
    grant_ BIGINT;
BEGIN
    FOR i IN
        SELECT u.ord FROM unnest(subjects, dimensions, windows) WITH ORDINALITY AS u (s, d, w, ord)
        ORDER BY u.s, u.d, u.w
    LOOP
        INSERT INTO quota_counters (subject_id, dimension, window_start, used)
        VALUES (subjects[i], dimensions[i], windows[i],
            CASE dimensions[i]
                WHEN 'budget_tokens' THEN COALESCE((SELECT t.tokens FROM usage_totals t
                    WHERE t.subject_id = subjects[i] AND t.period = periods[i]
                      AND t.period_start = windows[i]), 0)
                WHEN 'budget_micros' THEN COALESCE((SELECT t.cost_micros FROM usage_totals t
                    WHERE t.subject_id = subjects[i] AND t.period = periods[i]
                      AND t.period_start = windows[i]), 0)
                ELSE 0
            END)
        ON CONFLICT ON CONSTRAINT quota_counters_pkey DO NOTHING;
        SELECT q.used INTO cur FROM quota_counters q
        WHERE q.subject_id = subjects[i] AND q.dimension = dimensions[i]
          AND q.window_start = windows[i]
        FOR UPDATE;
        ceil_ := limits[i];
        IF dimensions[i] IN ('requests', 'tokens') THEN
            SELECT q.used INTO prev FROM quota_counters q
            WHERE q.subject_id = subjects[i] AND q.dimension = dimensions[i]
              AND q.window_start = windows[i] - interval '60 seconds';
            overlap := 1.0 - LEAST(1.0, GREATEST(0.0,
                EXTRACT(EPOCH FROM (clock_timestamp() - windows[i]))::DOUBLE PRECISION / 60.0));
            ceil_ := ceil_ - CEIL(COALESCE(prev, 0) * overlap)::BIGINT;
        END IF;
        grant_ := LEAST(wants[i], GREATEST(0, ceil_ - cur - charges[i]));
        UPDATE quota_counters q
        SET used = GREATEST(0, cur + charges[i] + grant_), updated_at = now()
        WHERE q.subject_id = subjects[i] AND q.dimension = dimensions[i]
          AND q.window_start = windows[i];
        idx := i;
        new_used := GREATEST(0, cur + charges[i] + grant_);
        granted := grant_;
        ceiling := ceil_;
        RETURN NEXT;
    END LOOP;
END
$$;

DROP TABLE usage_ledger, usage_rollup_queue, usage_hourly;
DROP FUNCTION obleth_queued_usage_totals(UUID, TEXT, TIMESTAMPTZ);
DROP FUNCTION obleth_fold_usage(INTEGER);
DROP FUNCTION obleth_queue_usage_rollup();
DROP FUNCTION obleth_usage_partition(DATE);
