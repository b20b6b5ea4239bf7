-- The usage ledger: where usage_events' rows live from this release on,
-- range-partitioned by day on created_at, with hourly rollups kept in the
-- writer's own transaction. This is step 1 of the online conversion
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

-- The running totals (budgets) now also skip rows copied from usage_events,
-- which they counted when those rows were first written.
CREATE OR REPLACE FUNCTION obleth_add_usage_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('obleth.usage_backfill', true) = 'on' THEN
        RETURN NULL;
    END IF;
    INSERT INTO usage_totals AS t (subject_id, period, period_start, requests, tokens, cost_micros)
    SELECT s.subject_id, p.period, obleth_period_start(p.period, n.created_at),
           count(*), COALESCE(sum(n.total_tokens), 0), COALESCE(sum(n.cost_micros), 0)
    FROM new_rows n
    CROSS JOIN LATERAL (VALUES (n.key_id), (n.team_id)) AS s (subject_id)
    CROSS JOIN (VALUES ('day'), ('week'), ('month'), ('total')) AS p (period)
    WHERE s.subject_id IS NOT NULL
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (subject_id, period, period_start) DO UPDATE
        SET requests = t.requests + EXCLUDED.requests,
            tokens = t.tokens + EXCLUDED.tokens,
            cost_micros = t.cost_micros + EXCLUDED.cost_micros;
    RETURN NULL;
END
$$;

-- Adds a statement's new ledger rows to the hourly rollups, in group order
-- so concurrent writers never deadlock. Rows skipped by ON CONFLICT DO
-- NOTHING are not in new_rows, so a retried batch never counts twice.
CREATE FUNCTION obleth_add_usage_hourly() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_hourly AS h (hour, key_id, team_id, model, provider, requests, errors,
        prompt_tokens, completion_tokens, total_tokens, cost_micros, last_seen)
    SELECT date_trunc('hour', n.created_at, 'UTC'), n.key_id, n.team_id, n.model, n.provider,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           COALESCE(sum(n.prompt_tokens), 0), COALESCE(sum(n.completion_tokens), 0),
           COALESCE(sum(n.total_tokens), 0), COALESCE(sum(n.cost_micros), 0), max(n.created_at)
    FROM new_rows n
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT ON CONSTRAINT usage_hourly_group DO UPDATE
        SET requests = h.requests + EXCLUDED.requests,
            errors = h.errors + EXCLUDED.errors,
            prompt_tokens = h.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = h.completion_tokens + EXCLUDED.completion_tokens,
            total_tokens = h.total_tokens + EXCLUDED.total_tokens,
            cost_micros = h.cost_micros + EXCLUDED.cost_micros,
            last_seen = GREATEST(h.last_seen, EXCLUDED.last_seen);
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_ledger_add_totals
    AFTER INSERT ON usage_ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION obleth_add_usage_totals();

CREATE TRIGGER usage_ledger_add_hourly
    AFTER INSERT ON usage_ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION obleth_add_usage_hourly();
