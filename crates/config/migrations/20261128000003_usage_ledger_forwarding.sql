-- Step 2 of the online conversion: every row the previous release inserts
-- into usage_events is also written to usage_ledger, in the same statement,
-- and usage_events stops counting running totals (usage_ledger's trigger
-- counts them now). Swapping the triggers in one transaction leaves no
-- moment when a row is counted twice or not at all. The lock this takes on
-- usage_events (SHARE ROW EXCLUSIVE, against inserts only) lasts only
-- these few catalog changes: the old trigger is disabled, not dropped,
-- because DROP TRIGGER takes ACCESS EXCLUSIVE, which would also queue the
-- previous release's reads of usage_events (its budgets and reports). The
-- contract step drops it with the table.
--
-- It also records where the copy of the older rows stops: every row with
-- an id up to the largest one now was written before forwarding, and none
-- after it. New ledger ids start past it, so copied rows keep their ids
-- (and the admin's list cursors) and no id is used twice.

-- The previous release does not keep partitions ahead, and the new release's
-- gateways (which do) may roll out days after this migration: a row whose
-- day has no partition yet gets one first, or the previous release's insert
-- would fail once the week of partitions made ahead by the migration before
-- this one ran out. The check is a catalog lookup per distinct day (one, as
-- a rule); only a missing day takes the partition lock.
CREATE FUNCTION obleth_usage_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM obleth_usage_partition(days.d)
    FROM (SELECT DISTINCT (n.created_at AT TIME ZONE 'UTC')::date AS d FROM new_rows n) AS days
    WHERE to_regclass('usage_ledger_' || to_char(days.d, 'YYYYMMDD')) IS NULL;
    INSERT INTO usage_ledger (request_id, key_id, model, provider, prompt_tokens,
        completion_tokens, total_tokens, status, latency_ms, streamed, node_id, created_at,
        cost_micros, estimated, team_id)
    SELECT request_id, key_id, model, provider, prompt_tokens, completion_tokens,
           total_tokens, status, latency_ms, streamed, node_id, created_at, cost_micros,
           estimated, team_id
    FROM new_rows
    ON CONFLICT ON CONSTRAINT usage_ledger_request_once DO NOTHING;
    RETURN NULL;
END
$$;

ALTER TABLE usage_events DISABLE TRIGGER usage_events_add_totals;

CREATE TRIGGER usage_events_forward
    AFTER INSERT ON usage_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION obleth_usage_forward();

-- The copy's progress: rows of usage_events with through < id <= until are
-- still to be copied.
CREATE TABLE usage_ledger_copy (
    through BIGINT NOT NULL,
    until   BIGINT NOT NULL
);

INSERT INTO usage_ledger_copy (through, until)
SELECT 0, COALESCE(max(id), 0) FROM usage_events;

SELECT setval('usage_ledger_id_seq', (SELECT until FROM usage_ledger_copy) + 1, false);

-- Copies the next `batch` ids of usage_events into usage_ledger and answers
-- how many ids it covered (0 once the copy is done). Each call is its own
-- short transaction. Copied rows add to the hourly rollups but not to the
-- running totals, which counted them when they were first written.
CREATE FUNCTION obleth_usage_copy_step(batch INTEGER) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    done_to BIGINT;
    last_id BIGINT;
    next_to BIGINT;
BEGIN
    SELECT c.through, c.until INTO done_to, last_id FROM usage_ledger_copy c FOR UPDATE;
    IF done_to >= last_id THEN
        RETURN 0;
    END IF;
    next_to := LEAST(done_to + batch, last_id);
    PERFORM obleth_usage_partition(d)
    FROM (SELECT DISTINCT (e.created_at AT TIME ZONE 'UTC')::date AS d FROM usage_events e
          WHERE e.id > done_to AND e.id <= next_to) AS days;
    PERFORM set_config('obleth.usage_backfill', 'on', true);
    INSERT INTO usage_ledger (id, request_id, key_id, model, provider, prompt_tokens,
        completion_tokens, total_tokens, status, latency_ms, streamed, node_id, created_at,
        cost_micros, estimated, team_id)
    SELECT e.id, e.request_id, e.key_id, e.model, e.provider, e.prompt_tokens,
           e.completion_tokens, e.total_tokens, e.status, e.latency_ms, e.streamed, e.node_id,
           e.created_at, e.cost_micros, e.estimated, e.team_id
    FROM usage_events e
    WHERE e.id > done_to AND e.id <= next_to
    ON CONFLICT ON CONSTRAINT usage_ledger_request_once DO NOTHING;
    PERFORM set_config('obleth.usage_backfill', 'off', true);
    UPDATE usage_ledger_copy SET through = next_to;
    RETURN next_to - done_to;
END
$$;
