-- Fleet-wide governance: teams, a price table, spend budgets with periods,
-- running usage totals and the shared quota counters the gateways lease from.
--
-- Every change is additive. The previous release never reads the new tables
-- or columns, its inserts into api_keys and usage_events get the defaults,
-- and its usage rows still reach their key's running totals through the
-- trigger.

-- Teams: limits and budgets shared by every key of the team.
CREATE TABLE teams (
    id                UUID PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    rpm_limit         INTEGER,
    tpm_limit         INTEGER,
    token_budget      BIGINT,
    -- Spend budget in micro-dollars (1 USD = 1 000 000).
    budget_usd_micros BIGINT,
    budget_period     TEXT NOT NULL DEFAULT 'total',
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT teams_rpm_limit_positive CHECK (rpm_limit IS NULL OR rpm_limit > 0),
    CONSTRAINT teams_tpm_limit_positive CHECK (tpm_limit IS NULL OR tpm_limit > 0),
    CONSTRAINT teams_token_budget_not_negative CHECK (token_budget IS NULL OR token_budget >= 0),
    CONSTRAINT teams_budget_usd_not_negative CHECK (budget_usd_micros IS NULL OR budget_usd_micros >= 0),
    CONSTRAINT teams_budget_period_known CHECK (budget_period IN ('day', 'week', 'month', 'total'))
);

-- A key belongs to at most one team. The constraint is NOT VALID: every
-- existing key has no team, and new writes are checked all the same.
ALTER TABLE api_keys ADD COLUMN team_id UUID;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_team_id_fkey
    FOREIGN KEY (team_id) REFERENCES teams (id) NOT VALID;

-- A key's spend budget and the period both its budgets reset on ('total'
-- never resets, which is what token_budget meant before).
ALTER TABLE api_keys ADD COLUMN budget_usd_micros BIGINT;
ALTER TABLE api_keys ADD COLUMN budget_period TEXT NOT NULL DEFAULT 'total';
ALTER TABLE api_keys ADD CONSTRAINT api_keys_budget_usd_not_negative
    CHECK (budget_usd_micros IS NULL OR budget_usd_micros >= 0) NOT VALID;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_budget_period_known
    CHECK (budget_period IN ('day', 'week', 'month', 'total')) NOT VALID;

-- Prices per model (an exact name or a glob with * and ?), in micro-dollars
-- per million tokens.
CREATE TABLE prices (
    id                      UUID PRIMARY KEY,
    model                   TEXT NOT NULL UNIQUE,
    input_micros_per_mtok   BIGINT NOT NULL,
    output_micros_per_mtok  BIGINT NOT NULL,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT prices_input_not_negative CHECK (input_micros_per_mtok >= 0),
    CONSTRAINT prices_output_not_negative CHECK (output_micros_per_mtok >= 0)
);

-- What a usage record cost (NULL: the model has no price), whether its
-- tokens were estimated because the upstream reported none, and the key's
-- team when the request was served.
ALTER TABLE usage_events ADD COLUMN cost_micros BIGINT;
ALTER TABLE usage_events ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE usage_events ADD COLUMN team_id UUID;

-- Running totals per key and per team for every period kind, kept by the
-- trigger below as usage rows arrive, so nothing re-sums usage_events.
-- period_start is the UTC start of the day, ISO week (Monday) or month;
-- 'total' uses the epoch.
CREATE TABLE usage_totals (
    subject_id   UUID NOT NULL,
    period       TEXT NOT NULL,
    period_start TIMESTAMPTZ NOT NULL,
    requests     BIGINT NOT NULL DEFAULT 0,
    tokens       BIGINT NOT NULL DEFAULT 0,
    cost_micros  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (subject_id, period, period_start),
    CONSTRAINT usage_totals_period_known CHECK (period IN ('day', 'week', 'month', 'total'))
);

-- The shared counters the gateways lease quota from: per key or team, per
-- dimension (requests, tokens, budget_tokens, budget_micros) and window (a
-- minute for the rate limits, the budget period's start for budgets).
CREATE TABLE quota_counters (
    subject_id   UUID NOT NULL,
    dimension    TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    used         BIGINT NOT NULL DEFAULT 0,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_id, dimension, window_start),
    CONSTRAINT quota_counters_dimension_known
        CHECK (dimension IN ('requests', 'tokens', 'budget_tokens', 'budget_micros'))
);

-- Old minute windows are deleted by window_start.
CREATE INDEX quota_counters_window_start ON quota_counters (window_start);

-- The start of `period` containing `at`, in UTC.
CREATE FUNCTION obleth_period_start(period TEXT, at TIMESTAMPTZ) RETURNS TIMESTAMPTZ
    LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE period
        WHEN 'total' THEN 'epoch'::timestamptz
        ELSE date_trunc(period, at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    END
$$;

-- Adds a statement's new usage rows to the running totals of their key and
-- of their team. Rows skipped by ON CONFLICT DO NOTHING are not in
-- new_rows, so a retried batch never counts twice. Rows are upserted in key
-- order, so concurrent batches do not deadlock. The team is the row's own
-- (api_keys is not read, so usage batches cost no key lookups): rows written
-- by a release that knows no teams count for their key only.
CREATE FUNCTION obleth_add_usage_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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

CREATE TRIGGER usage_events_add_totals
    AFTER INSERT ON usage_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION obleth_add_usage_totals();

-- The totals of the usage recorded before the trigger existed. The trigger
-- took its lock first, so no row is counted twice or missed.
INSERT INTO usage_totals (subject_id, period, period_start, requests, tokens, cost_micros)
SELECT u.key_id, p.period, obleth_period_start(p.period, u.created_at),
       count(*), COALESCE(sum(u.total_tokens), 0), 0
FROM usage_events u
CROSS JOIN (VALUES ('day'), ('week'), ('month'), ('total')) AS p (period)
WHERE u.key_id IS NOT NULL
GROUP BY 1, 2, 3;

-- Leases quota for a batch of counters in one call, in key order (so
-- concurrent callers never deadlock). For counter i it first adds
-- charges[i] (a gateway's debt; negative to hand quota back), then grants
-- up to wants[i] more while the counter stays at or below its ceiling:
-- limits[i], less, for the minute dimensions, the previous minute's use
-- weighted by how much of it still overlaps the last 60 s (a sliding
-- window, on the database's clock). A budget counter starts from the
-- period's usage_totals, so usage recorded before counters existed counts.
-- Answers, per input position, the counter's new use, the grant and the
-- ceiling it was judged against.
CREATE FUNCTION obleth_quota_lease(
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
