-- Reverts 20261128000001_fleet_governance.sql: teams, prices, running
-- totals, quota counters, the functions and trigger that kept them, and the
-- columns it added to api_keys and usage_events.
--
-- No usage record is lost: every usage row stays in usage_events (the
-- ledger is reverted before this, its rows moved back). What goes is what
-- the release before this migration cannot hold: a key's team and spend
-- budget, a record's cost, team and estimated flag, and the running totals,
-- which are sums of usage_events' rows.
--
-- The trigger goes first, so no usage insert reaches a half-dropped
-- function; usage_events and api_keys are each altered in one statement,
-- so each is locked (ACCESS EXCLUSIVE, catalog only) once.
DROP TRIGGER usage_events_add_totals ON usage_events;
DROP FUNCTION obleth_add_usage_totals();
DROP FUNCTION obleth_quota_lease(UUID[], TEXT[], TIMESTAMPTZ[], TEXT[], BIGINT[], BIGINT[],
    BIGINT[]);
DROP FUNCTION obleth_period_start(TEXT, TIMESTAMPTZ);

DROP TABLE quota_counters, usage_totals, prices;

ALTER TABLE usage_events
    DROP COLUMN team_id,
    DROP COLUMN estimated,
    DROP COLUMN cost_micros;

ALTER TABLE api_keys
    DROP CONSTRAINT api_keys_budget_period_known,
    DROP CONSTRAINT api_keys_budget_usd_not_negative,
    DROP COLUMN budget_period,
    DROP COLUMN budget_usd_micros,
    DROP CONSTRAINT api_keys_team_id_fkey,
    DROP COLUMN team_id;

DROP TABLE teams;
