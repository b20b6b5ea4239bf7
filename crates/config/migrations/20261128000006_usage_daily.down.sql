-- Reverts 20261128000006_usage_daily.sql: the daily rollups, their
-- triggers and function, the aggregate obleth_sum, the rollups' fillfactors,
-- and obleth_queued_usage_totals and obleth_fold_usage as
-- 20261128000002 created them (text for text).
--
-- No usage record is lost: the daily rollups are sums of usage_hourly,
-- which stays. The triggers go first, under an ACCESS EXCLUSIVE lock on
-- usage_hourly that lasts from the DROP TRIGGER to the commit (folds wait;
-- usage writers append to the queue and go on; readers of usage_hourly
-- wait), bounded by lock_timeout.
DROP TRIGGER usage_hourly_daily_inserted ON usage_hourly;
DROP TRIGGER usage_hourly_daily_updated ON usage_hourly;
DROP FUNCTION obleth_usage_daily_add();
DROP TABLE usage_daily_keys, usage_daily_models;

ALTER TABLE usage_hourly RESET (fillfactor);
ALTER TABLE usage_totals RESET (fillfactor);

-- As 20261128000002 created it: each call resolves the period start
-- through obleth_period_start.
CREATE OR REPLACE FUNCTION obleth_queued_usage_totals(subject UUID, period TEXT, period_start TIMESTAMPTZ,
    OUT requests BIGINT, OUT tokens BIGINT, OUT cost_micros BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(sum(q.requests), 0)::bigint, COALESCE(sum(q.total_tokens), 0)::bigint,
           COALESCE(sum(q.cost_micros), 0)::bigint
    FROM usage_rollup_queue q
    WHERE q.totals AND (q.key_id = subject OR q.team_id = subject)
      AND obleth_period_start(period, q.hour) = period_start
$$;

-- As 20261128000002 created it: concurrent folders take disjoint rows
-- with FOR UPDATE SKIP LOCKED.
CREATE OR REPLACE FUNCTION obleth_fold_usage(max_groups INTEGER) RETURNS BIGINT
LANGUAGE sql AS $$
    WITH taken AS (
        DELETE FROM usage_rollup_queue q
        WHERE q.id IN (SELECT id FROM usage_rollup_queue ORDER BY id LIMIT max_groups
                       FOR UPDATE SKIP LOCKED)
        RETURNING q.*
    ), hourly AS (
        INSERT INTO usage_hourly AS h (hour, key_id, team_id, model, provider, requests, errors,
            prompt_tokens, completion_tokens, total_tokens, cost_micros, last_seen)
        SELECT t.hour, t.key_id, t.team_id, t.model, t.provider, sum(t.requests), sum(t.errors),
               sum(t.prompt_tokens), sum(t.completion_tokens), sum(t.total_tokens),
               sum(t.cost_micros), max(t.last_seen)
        FROM taken t
        GROUP BY 1, 2, 3, 4, 5
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT ON CONSTRAINT usage_hourly_group DO UPDATE
            SET requests = h.requests + EXCLUDED.requests,
                errors = h.errors + EXCLUDED.errors,
                prompt_tokens = h.prompt_tokens + EXCLUDED.prompt_tokens,
                completion_tokens = h.completion_tokens + EXCLUDED.completion_tokens,
                total_tokens = h.total_tokens + EXCLUDED.total_tokens,
                cost_micros = h.cost_micros + EXCLUDED.cost_micros,
                last_seen = GREATEST(h.last_seen, EXCLUDED.last_seen)
    ), totals AS (
        INSERT INTO usage_totals AS u (subject_id, period, period_start, requests, tokens,
            cost_micros)
        SELECT s.subject_id, p.period, obleth_period_start(p.period, t.hour),
               sum(t.requests), sum(t.total_tokens), sum(t.cost_micros)
        FROM taken t
        CROSS JOIN LATERAL (VALUES (t.key_id), (t.team_id)) AS s (subject_id)
        CROSS JOIN (VALUES ('day'), ('week'), ('month'), ('total')) AS p (period)
        WHERE t.totals AND s.subject_id IS NOT NULL
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        ON CONFLICT (subject_id, period, period_start) DO UPDATE
            SET requests = u.requests + EXCLUDED.requests,
                tokens = u.tokens + EXCLUDED.tokens,
                cost_micros = u.cost_micros + EXCLUDED.cost_micros
    )
    SELECT count(*) FROM taken
$$;

DROP AGGREGATE obleth_sum(BIGINT);
