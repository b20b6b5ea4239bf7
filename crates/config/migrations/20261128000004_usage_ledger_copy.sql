-- no-transaction
-- batched
--
-- Step 3 of the online conversion: copies the rows usage_events held
-- before forwarding began, 10,000 ids a statement, each statement its own
-- transaction (the runner repeats a batched statement until it answers 0).
-- It only reads usage_events, so the previous release's inserts never wait
-- for it, and a run that stops part-way resumes where it stopped.
SELECT obleth_usage_copy_step(10000);
