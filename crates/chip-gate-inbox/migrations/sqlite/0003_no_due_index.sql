-- chip-gate-inbox schema, version 3 (SQLite): the index of due deliveries goes.
--
-- On SQLite a claim walks the pending deliveries in id order on `chip_inbox_deliveries_state`
-- (state, id), and the counts read that index too: SQLite's planner chose the partial index on
-- next_attempt_at for none of the inbox's queries. It still cost every stored delivery an entry
-- and every change of state another one. Without it a commit of one delivery writes 4.5 pages
-- to the WAL on average instead of 5.0 (each page is written, fsynced with the commit and
-- copied again at the next checkpoint). PostgreSQL keeps its index of due deliveries (its
-- schema version 4), which its claims walk.
DROP INDEX IF EXISTS chip_inbox_deliveries_due;
