-- chip-gate-inbox schema, version 1 (PostgreSQL). Times are Unix milliseconds.
CREATE TABLE chip_inbox_deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedup_key TEXT NOT NULL UNIQUE,
    lane TEXT NOT NULL,
    event TEXT NOT NULL,
    object_kind TEXT NOT NULL,
    object_id TEXT,
    updated_on BIGINT,
    signature TEXT NOT NULL,
    body BYTEA NOT NULL,
    typing_problem TEXT,
    received_at BIGINT NOT NULL,
    duplicates BIGINT NOT NULL DEFAULT 0,
    last_duplicate_at BIGINT,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    finished_at BIGINT,
    replay BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX chip_inbox_deliveries_due ON chip_inbox_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX chip_inbox_deliveries_lane ON chip_inbox_deliveries (lane, state);
CREATE INDEX chip_inbox_deliveries_finished ON chip_inbox_deliveries (finished_at) WHERE state IN ('done', 'stale');
CREATE INDEX chip_inbox_deliveries_state ON chip_inbox_deliveries (state, id);

CREATE TABLE chip_inbox_lanes (
    lane TEXT PRIMARY KEY,
    handled_updated_on BIGINT,
    handled_at BIGINT,
    lease_owner TEXT,
    lease_token TEXT,
    lease_delivery BIGINT,
    lease_until BIGINT
);

CREATE TABLE chip_inbox_counters (
    name TEXT NOT NULL,
    shard BIGINT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (name, shard)
);
