-- Reverts 20261128000003_usage_ledger_forwarding.sql: usage_events is the
-- table of record again. Its totals trigger counts the rows the previous
-- release writes; forwarding, the copy's progress table and its function go.
--
-- No usage record is lost. While forwarding ran, the new release wrote its
-- usage to usage_ledger alone; the previous release reads usage_events, so
-- every ledger row without a twin there (same request_id) is moved back
-- first, and the file refuses, changing nothing, if a ledger row still has
-- none (a request_id usage_events holds at another created_at). The ledger
-- itself stays until 20261128000002 is reverted.
--
-- Counting: the moved rows were counted by the ledger's queue, which is
-- folded into usage_totals first (the previous release reads usage_totals
-- and never folds), and usage_events' totals trigger is still disabled
-- while they move, so no row counts twice. The move's cost grows with the
-- rows the new release wrote; raise --statement-timeout-secs for a long one.
--
-- Ids: usage_events' identity sequence moves past every ledger id before
-- the move, so a later `up` (which starts new ledger ids past usage_events'
-- largest) never hands out a ledger id twice. Only rows a new gateway
-- writes to the ledger after this (past `down --force`) can share an id
-- with a row a later copy brings over; ids order the admin's usage listing
-- and nothing else.
--
-- Locks, taken in the order a forwarded insert takes them, all under
-- lock_timeout: usage_events SHARE ROW EXCLUSIVE (the previous release's
-- inserts wait, its reads go on) and usage_ledger EXCLUSIVE (new gateways'
-- inserts wait, so none lands between the move and its check; reads go on)
-- from the start to the commit; usage_events ACCESS EXCLUSIVE from the DROP
-- TRIGGER near the end.
LOCK TABLE usage_events IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE usage_ledger IN EXCLUSIVE MODE;

DO $$
BEGIN
    WHILE obleth_fold_usage(100000) > 0 LOOP
    END LOOP;
END
$$;

SELECT setval(pg_get_serial_sequence('usage_events', 'id'),
    GREATEST((SELECT max(id) FROM usage_ledger), (SELECT max(id) FROM usage_events), 1));

-- The forwarding trigger sees these rows, finds them in the ledger and
-- inserts nothing (ON CONFLICT DO NOTHING), so the ledger queues nothing.
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

DROP TRIGGER usage_events_forward ON usage_events;
ALTER TABLE usage_events ENABLE TRIGGER usage_events_add_totals;

DROP FUNCTION obleth_usage_copy_step(INTEGER);
DROP TABLE usage_ledger_copy;
DROP FUNCTION obleth_usage_forward();
