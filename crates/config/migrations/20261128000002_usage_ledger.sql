-- The usage ledger: where usage_events' rows live from this release on,
-- range-partitioned by day on created_at, with hourly rollups and running
-- totals folded in from a queue outside the writer's transaction. This is step 1 of the online conversion
-- (docs/migrations.md, "Worked example: partitioning usage_events"): it
-- creates the new tables next to usage_events and touches nothing the
-- previous release uses.
--
-- Daily partitions: retention drops whole days, a day at 1,000 requests a
-- second is 86 million rows (a month would be 2.6 billion, too large to
-- vacuum or index in one piece), and a year is 365 partitions, which the
-- planner prunes from the time range of every query.
--
-- Exactly once: a partitioned table's unique keys must include its
-- partition column, so the idempotency key is (request_id, created_at).
-- created_at is set once, when the gateway makes the record, and a retried
-- batch carries the same value, so a retry collides with its stored row.

CREATE SEQUENCE usage_ledger_id_seq;

CREATE TABLE usage_ledger (
    id                BIGINT NOT NULL DEFAULT nextval('usage_ledger_id_seq'),
    request_id        UUID NOT NULL,
    key_id            UUID,
    model             TEXT NOT NULL,
    provider          TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    total_tokens      INTEGER,
    status            SMALLINT NOT NULL,
    latency_ms        INTEGER NOT NULL,
    streamed          BOOLEAN NOT NULL DEFAULT FALSE,
    node_id           TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    cost_micros       BIGINT,
    estimated         BOOLEAN NOT NULL DEFAULT FALSE,
    team_id           UUID,
    CONSTRAINT usage_ledger_request_once UNIQUE (request_id, created_at)
) PARTITION BY RANGE (created_at);

ALTER SEQUENCE usage_ledger_id_seq OWNED BY usage_ledger.id;

-- A key's records by time, the records' order (the list cursor), and a
-- block range index for time scans across keys (rows arrive in time order).
CREATE INDEX usage_ledger_key_time ON usage_ledger (key_id, created_at);
CREATE INDEX usage_ledger_id ON usage_ledger (id);
CREATE INDEX usage_ledger_time ON usage_ledger USING brin (created_at);

-- Hourly totals per key, team, model and provider: what the admin's usage
-- totals read. NULLS NOT DISTINCT: a request without a key or provider is
-- one group, not one row per request.
CREATE TABLE usage_hourly (
    hour              TIMESTAMPTZ NOT NULL,
    key_id            UUID,
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
    CONSTRAINT usage_hourly_group UNIQUE NULLS NOT DISTINCT (hour, key_id, team_id, model, provider)
);

CREATE INDEX usage_hourly_key ON usage_hourly (key_id, hour);

-- Creates the partition of usage_ledger for one UTC day unless it exists;
-- answers whether it made one. The table is created alone and attached with
-- a matching CHECK, so the parent is locked only SHARE UPDATE EXCLUSIVE
-- (inserts and reads go on) and the attach scans nothing. A transaction lock
-- on the day's name serialises callers, so concurrent gateways never race.
CREATE FUNCTION obleth_usage_partition(day DATE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    part TEXT := 'usage_ledger_' || to_char(day, 'YYYYMMDD');
    lo TIMESTAMPTZ := day::timestamp AT TIME ZONE 'UTC';
    hi TIMESTAMPTZ := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(part));
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'usage_ledger'::regclass AND c.relname = part) THEN
        RETURN FALSE;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I (LIKE usage_ledger INCLUDING DEFAULTS)', part);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (created_at >= %L AND created_at < %L)',
                   part, part || '_day', lo, hi);
    EXECUTE format('ALTER TABLE usage_ledger ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   part, lo, hi);
    RETURN TRUE;
END
$$;

-- A week back and a week ahead, and every day usage_events has rows for, so
-- the copy of the old rows (a later migration) finds its partitions.
SELECT obleth_usage_partition(d::date)
FROM generate_series(
    LEAST((SELECT min(created_at) FROM usage_events), now()) AT TIME ZONE 'UTC' - interval '7 days',
    now() AT TIME ZONE 'UTC' + interval '7 days',
    interval '1 day') AS d;

-- The rollups and running totals are kept out of the writer's transaction.
-- A statement trigger appends one pre-aggregated row per (hour, key, team,
-- model, provider) of the statement's new rows to usage_rollup_queue: a
-- plain INSERT, so concurrent writers share no row lock. obleth_fold_usage
-- (every gateway calls it about once a second) moves queued rows into
-- usage_hourly and usage_totals; its delete and its upserts commit
-- together, so every queued row is counted exactly once. Readers add the
-- queue's rows to the rollups', so every read is exact before a fold.
--
-- Rows copied from usage_events (obleth.usage_backfill on) go to the hourly
-- rollups but not to the running totals, which counted them when they were
-- first written: `totals` is false for them.
CREATE TABLE usage_rollup_queue (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hour              TIMESTAMPTZ NOT NULL,
    key_id            UUID,
    team_id           UUID,
    model             TEXT NOT NULL,
    provider          TEXT,
    totals            BOOLEAN NOT NULL,
    requests          BIGINT NOT NULL,
    errors            BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens      BIGINT NOT NULL,
    cost_micros       BIGINT NOT NULL,
    last_seen         TIMESTAMPTZ NOT NULL
);

-- Every fold deletes what it folded: autovacuum should not wait for a
-- fifth of the table to be dead (the gateways also vacuum it every ~10 s).
ALTER TABLE usage_rollup_queue SET (autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000);

-- Queues a statement's new ledger rows, one row per group. Rows skipped by
-- ON CONFLICT DO NOTHING are not in new_rows, so a retried batch never
-- counts twice.
CREATE FUNCTION obleth_queue_usage_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_rollup_queue (hour, key_id, team_id, model, provider, totals, requests,
        errors, prompt_tokens, completion_tokens, total_tokens, cost_micros, last_seen)
    SELECT date_trunc('hour', n.created_at, 'UTC'), n.key_id, n.team_id, n.model, n.provider,
           current_setting('obleth.usage_backfill', true) IS DISTINCT FROM 'on',
           count(*), count(*) FILTER (WHERE n.status >= 400),
           COALESCE(sum(n.prompt_tokens), 0), COALESCE(sum(n.completion_tokens), 0),
           COALESCE(sum(n.total_tokens), 0), COALESCE(sum(n.cost_micros), 0), max(n.created_at)
    FROM new_rows n
    GROUP BY 1, 2, 3, 4, 5;
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_ledger_queue_rollup
    AFTER INSERT ON usage_ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION obleth_queue_usage_rollup();

-- Folds up to max_groups queued rows (oldest first) into usage_hourly and
-- usage_totals (every period of the row's key and of its team, when the
-- row counts for the totals) and deletes them, in one statement and so one
-- transaction; answers how many it folded (0: the queue is empty, or every
-- row is being folded by another caller). SKIP LOCKED lets concurrent
-- folders take disjoint rows; each upserts in group order (and its two
-- upserts always in the same order), so they never deadlock. The queue is
-- read once. A fold's cost grows with the distinct groups it touches, not
-- with its queued rows, so a fold that takes many rows at once (a lagging
-- one) costs little more than a small one. A day, ISO week or month starts
-- on a UTC hour, so the hour gives each row's periods.
CREATE FUNCTION obleth_fold_usage(max_groups INTEGER) RETURNS BIGINT
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

-- The running totals of one subject's period still in the queue: what
-- readers add to usage_totals so a budget is exact before a fold.
CREATE FUNCTION obleth_queued_usage_totals(subject UUID, period TEXT, period_start TIMESTAMPTZ,
    OUT requests BIGINT, OUT tokens BIGINT, OUT cost_micros BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(sum(q.requests), 0)::bigint, COALESCE(sum(q.total_tokens), 0)::bigint,
           COALESCE(sum(q.cost_micros), 0)::bigint
    FROM usage_rollup_queue q
    WHERE q.totals AND (q.key_id = subject OR q.team_id = subject)
      AND obleth_period_start(period, q.hour) = period_start
$$;

-- obleth_quota_lease (20261128000001) as before, except that a budget
-- counter starts from the period's usage_totals plus its rows still in the
-- queue, so a counter made between a batch and its fold misses nothing.
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
                    + (SELECT q.tokens FROM obleth_queued_usage_totals(subjects[i], periods[i],
                       windows[i]) q)
                WHEN 'budget_micros' THEN COALESCE((SELECT t.cost_micros FROM usage_totals t
                    WHERE t.subject_id = subjects[i] AND t.period = periods[i]
                      AND t.period_start = windows[i]), 0)
                    + (SELECT q.cost_micros FROM obleth_queued_usage_totals(subjects[i], periods[i],
                       windows[i]) q)
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
