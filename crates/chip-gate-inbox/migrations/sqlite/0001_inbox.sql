-- chip-gate-inbox schema, version 1 (SQLite). Times are Unix milliseconds.
CREATE TABLE chip_inbox_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL UNIQUE,
    lane TEXT NOT NULL,
    event TEXT NOT NULL,
    object_kind TEXT NOT NULL,
    object_id TEXT,
    updated_on INTEGER,
    signature TEXT NOT NULL,
    body BLOB NOT NULL,
    typing_problem TEXT,
    received_at INTEGER NOT NULL,
    duplicates INTEGER NOT NULL DEFAULT 0,
    last_duplicate_at INTEGER,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    finished_at INTEGER,
    replay INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX chip_inbox_deliveries_due ON chip_inbox_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX chip_inbox_deliveries_lane ON chip_inbox_deliveries (lane, state);
CREATE INDEX chip_inbox_deliveries_finished ON chip_inbox_deliveries (finished_at) WHERE state IN ('done', 'stale');
CREATE INDEX chip_inbox_deliveries_state ON chip_inbox_deliveries (state, id);

CREATE TABLE chip_inbox_lanes (
    lane TEXT PRIMARY KEY,
    handled_updated_on INTEGER,
    handled_at INTEGER,
    lease_owner TEXT,
    lease_token TEXT,
    lease_delivery INTEGER,
    lease_until INTEGER
);

CREATE TABLE chip_inbox_counters (
    name TEXT NOT NULL,
    shard INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (name, shard)
);
