-- Step 4 of the online conversion, the contract: once no live node runs a
-- release that writes usage_events, drop it with what kept it in step.
-- Refuses to run until the copy is complete.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM usage_ledger_copy WHERE through < until) THEN
        RAISE EXCEPTION 'the copy of usage_events into usage_ledger is not complete; run obleth-migrator up first';
    END IF;
END
$$;

DROP TABLE usage_events;
DROP TABLE usage_ledger_copy;
DROP FUNCTION obleth_usage_copy_step(INTEGER);
DROP FUNCTION obleth_usage_forward();
