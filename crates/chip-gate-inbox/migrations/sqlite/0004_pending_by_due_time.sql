-- chip-gate-inbox schema, version 4 (SQLite): the state index orders each state's deliveries by
-- the time they come due.
--
-- Up to version 3 a claim walked the pending deliveries in id order on (state, id) and checked
-- each one's next_attempt_at. Deliveries waiting for a retry are pending too, so while an app's
-- handler failed for a while every claim stepped over all of them: with 20,000 waiting, storing
-- a new delivery took ten times as long, for a claim holds SQLite's one write lock while it
-- walks. On (state, next_attempt_at, id) the claim reads the due deliveries only, in the order
-- they came due (as PostgreSQL's claims do since its version 4), and stops after enough.
--
-- It replaces the old index rather than adding one: next_attempt_at changes only when a
-- delivery fails or an operator requeues it, so a stored delivery still costs one entry here
-- and the intake writes no more than before. Counts by state read it as they read the old one.
DROP INDEX IF EXISTS chip_inbox_deliveries_state;
CREATE INDEX chip_inbox_deliveries_state_due ON chip_inbox_deliveries (state, next_attempt_at, id);
