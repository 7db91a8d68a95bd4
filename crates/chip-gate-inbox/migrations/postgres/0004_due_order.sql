-- chip-gate-inbox schema, version 4 (PostgreSQL only; SQLite keeps version 2): due deliveries
-- in a total order, the one claims walk.
--
-- A claim's candidates are walked one index step at a time (a plan that does not depend on the
-- table's statistics), from the delivery that came due first. Each step asks for the next
-- pending delivery after the last one in (next_attempt_at, id) order, so the index holds both:
-- with next_attempt_at alone, the many deliveries that come due in the same millisecond would
-- be stepped over again at every step. Walking only what is due, a claim never steps over
-- deliveries waiting for a retry, however many there are.
DROP INDEX chip_inbox_deliveries_due;
CREATE INDEX chip_inbox_deliveries_due ON chip_inbox_deliveries (next_attempt_at, id) WHERE state = 'pending';
