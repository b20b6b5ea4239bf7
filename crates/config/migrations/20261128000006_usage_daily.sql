-- Daily rollups at two narrower grains, so a report over whole days reads
-- one row a group a day instead of every (hour, key, team, model, provider)
-- of usage_hourly: with 10,000 keys a day of usage_hourly is up to a
-- quarter of a million rows, a day of usage_daily_keys is one row a key.
--
--   usage_daily_keys    (day, key, team):             reports by key or team,
--                                                      narrowed by key or team;
--   usage_daily_models  (day, team, model, provider): reports by team, model or
--                                                      provider, narrowed by any
--                                                      of those (no key).
--
-- A report that needs a key and a model together still reads usage_hourly.
--
-- Both are kept by statement triggers on usage_hourly, so every writer of
-- usage_hourly keeps them whatever release it runs: the fold of this
-- release and of the previous one alike. Each trigger adds the statement's
-- change (new rows minus the old versions of updated rows) to the days it
-- touched, and takes a transaction advisory lock first: the INSERT and the
-- UPDATE triggers of one fold run one after the other, each in group order,
-- and two folds interleaving them could otherwise deadlock.
--
-- The fold gets cheaper a queued row (bench/LEDGER.md): one folder at a
-- time (a transaction advisory lock; a caller that finds it taken folds
-- nothing and answers 0), so its DELETE needs no FOR UPDATE SKIP LOCKED
-- pass, which wrote every queued row once more before deleting it; and the
-- rollups leave room on their pages for HOT updates (the fold updates the
-- current hour's and day's rows over and over, and none of the columns it
-- changes is indexed, so with room on the page an update writes no index).
--
-- Expand: the previous release neither reads nor writes these tables; its
-- folds feed them through the triggers.

-- sum(bigint) accumulates in numeric, a state allocated a group: summing
-- six columns over 10,000 keys cost a report more than reading them.
-- obleth_sum adds in bigint (int8pl, which raises on overflow, as the
-- numeric sum's cast back to bigint does) and answers NULL for no rows.
CREATE AGGREGATE obleth_sum(BIGINT) (
    SFUNC = int8pl,
    STYPE = BIGINT,
    COMBINEFUNC = int8pl,
    PARALLEL = SAFE
);

CREATE TABLE usage_daily_keys (
    day               TIMESTAMPTZ NOT NULL,
    key_id            UUID,
    team_id           UUID,
    requests          BIGINT NOT NULL,
    errors            BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens      BIGINT NOT NULL,
    cost_micros       BIGINT NOT NULL,
    last_seen         TIMESTAMPTZ NOT NULL,
    CONSTRAINT usage_daily_keys_group UNIQUE NULLS NOT DISTINCT (day, key_id, team_id)
) WITH (fillfactor = 70);

-- One key over many days.
CREATE INDEX usage_daily_keys_key ON usage_daily_keys (key_id, day);

CREATE TABLE usage_daily_models (
    day               TIMESTAMPTZ NOT NULL,
    team_id           UUID,
    model             TEXT NOT NULL,
    provider          TEXT,
    requests          BIGINT NOT NULL,
    errors            BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens      BIGINT NOT NULL,
    cost_micros       BIGINT NOT NULL,
    last_seen         TIMESTAMPTZ NOT NULL,
    CONSTRAINT usage_daily_models_group UNIQUE NULLS NOT DISTINCT (day, team_id, model, provider)
) WITH (fillfactor = 70);

-- Adds a statement's change of usage_hourly to the daily rollups: its
-- inserted rows (the INSERT trigger), or its updated rows' new versions
-- minus their old ones (the UPDATE trigger; old_rows exists only there,
-- so the statements are built for the trigger's operation).
CREATE FUNCTION obleth_usage_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cols CONSTANT TEXT := 'hour, key_id, team_id, model, provider';
    changes TEXT := 'new_rows';
    sums CONSTANT TEXT := 'sum(c.requests), sum(c.errors), sum(c.prompt_tokens), '
        'sum(c.completion_tokens), sum(c.total_tokens), sum(c.cost_micros), max(c.last_seen)';
    adds CONSTANT TEXT := 'requests = d.requests + EXCLUDED.requests, '
        'errors = d.errors + EXCLUDED.errors, '
        'prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens, '
        'completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens, '
        'total_tokens = d.total_tokens + EXCLUDED.total_tokens, '
        'cost_micros = d.cost_micros + EXCLUDED.cost_micros, '
        'last_seen = GREATEST(d.last_seen, EXCLUDED.last_seen)';
    totals CONSTANT TEXT := 'requests, errors, prompt_tokens, completion_tokens, total_tokens, '
        'cost_micros, last_seen';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        changes := format('(SELECT %1$s, %2$s FROM new_rows UNION ALL SELECT %1$s, -requests, '
            '-errors, -prompt_tokens, -completion_tokens, -total_tokens, -cost_micros, NULL '
            'FROM old_rows)', cols, totals);
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('obleth_usage_daily'));
    EXECUTE format('INSERT INTO usage_daily_keys AS d (day, key_id, team_id, %s) '
        'SELECT date_trunc(''day'', c.hour, ''UTC''), c.key_id, c.team_id, %s FROM %s AS c '
        'GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 '
        'ON CONFLICT ON CONSTRAINT usage_daily_keys_group DO UPDATE SET %s',
        totals, sums, changes, adds);
    EXECUTE format('INSERT INTO usage_daily_models AS d (day, team_id, model, provider, %s) '
        'SELECT date_trunc(''day'', c.hour, ''UTC''), c.team_id, c.model, c.provider, %s '
        'FROM %s AS c GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 '
        'ON CONFLICT ON CONSTRAINT usage_daily_models_group DO UPDATE SET %s',
        totals, sums, changes, adds);
    RETURN NULL;
END
$$;

-- The folds wait (SHARE ROW EXCLUSIVE conflicts with their ROW EXCLUSIVE)
-- from here to the commit, so the rows copied below are exactly the
-- rollups the triggers will add to; writers and readers go on (the
-- writers append to the queue, which readers add to the rollups).
LOCK TABLE usage_hourly IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER usage_hourly_daily_inserted
    AFTER INSERT ON usage_hourly
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION obleth_usage_daily_add();

CREATE TRIGGER usage_hourly_daily_updated
    AFTER UPDATE ON usage_hourly
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION obleth_usage_daily_add();

INSERT INTO usage_daily_keys (day, key_id, team_id, requests, errors, prompt_tokens,
    completion_tokens, total_tokens, cost_micros, last_seen)
SELECT date_trunc('day', h.hour, 'UTC'), h.key_id, h.team_id, sum(h.requests), sum(h.errors),
       sum(h.prompt_tokens), sum(h.completion_tokens), sum(h.total_tokens), sum(h.cost_micros),
       max(h.last_seen)
FROM usage_hourly h
GROUP BY 1, 2, 3;

INSERT INTO usage_daily_models (day, team_id, model, provider, requests, errors, prompt_tokens,
    completion_tokens, total_tokens, cost_micros, last_seen)
SELECT date_trunc('day', h.hour, 'UTC'), h.team_id, h.model, h.provider, sum(h.requests),
       sum(h.errors), sum(h.prompt_tokens), sum(h.completion_tokens), sum(h.total_tokens),
       sum(h.cost_micros), max(h.last_seen)
FROM usage_hourly h
GROUP BY 1, 2, 3, 4;

-- New pages only; the pages of past hours are not updated again.
ALTER TABLE usage_hourly SET (fillfactor = 80);
ALTER TABLE usage_totals SET (fillfactor = 70);

-- obleth_queued_usage_totals (20261128000002) with the period start
-- written out: obleth_period_start, a STRICT SQL function with a CASE, is
-- not inlined, and a call a queued row cost most of a budget read.
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

-- obleth_fold_usage (20261128000002), one caller at a time (see above),
-- its running totals grouped by subject and hour first and their period
-- starts written out (as above: a call a row cost most of the fold).
CREATE OR REPLACE FUNCTION obleth_fold_usage(max_groups INTEGER) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    folded BIGINT;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('obleth_fold_usage')) THEN
        RETURN 0;
    END IF;
    WITH taken AS (
        DELETE FROM usage_rollup_queue q
        WHERE q.id IN (SELECT id FROM usage_rollup_queue ORDER BY id LIMIT max_groups)
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
    ), by_hour AS (
        SELECT s.subject_id, t.hour, sum(t.requests) AS requests,
               sum(t.total_tokens) AS tokens, sum(t.cost_micros) AS cost_micros
        FROM taken t
        CROSS JOIN LATERAL (VALUES (t.key_id), (t.team_id)) AS s (subject_id)
        WHERE t.totals AND s.subject_id IS NOT NULL
        GROUP BY 1, 2
    ), totals AS (
        INSERT INTO usage_totals AS u (subject_id, period, period_start, requests, tokens,
            cost_micros)
        SELECT b.subject_id, p.period,
               CASE p.period WHEN 'total' THEN 'epoch'::timestamptz
                    ELSE date_trunc(p.period, b.hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               END,
               sum(b.requests), sum(b.tokens), sum(b.cost_micros)
        FROM by_hour b
        CROSS JOIN (VALUES ('day'), ('week'), ('month'), ('total')) AS p (period)
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        ON CONFLICT (subject_id, period, period_start) DO UPDATE
            SET requests = u.requests + EXCLUDED.requests,
                tokens = u.tokens + EXCLUDED.tokens,
                cost_micros = u.cost_micros + EXCLUDED.cost_micros
    )
    SELECT count(*) INTO folded FROM taken;
    RETURN folded;
END
$$;
