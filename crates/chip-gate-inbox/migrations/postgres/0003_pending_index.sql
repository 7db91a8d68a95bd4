-- chip-gate-inbox schema, version 3 (PostgreSQL only; SQLite's planner keeps to the (state, id)
-- index, and its schema stays at version 2): pending deliveries in arrival order, on their own.
--
-- Claims walk pending deliveries oldest first. The (state, id) index holds them too, but once
-- statistics say most rows are pending, PostgreSQL's planner walks the primary key instead and
-- filters on state: after a backlog drains, every claim stepped over every handled delivery
-- (4 ms a claim at 20,000). A partial index holds only what claims look for.
CREATE INDEX chip_inbox_deliveries_pending ON chip_inbox_deliveries (id) WHERE state = 'pending';
