-- chip-gate-inbox schema, version 2 (SQLite): injective dedup keys and lanes, lanes by object
-- identity whatever the typing result, and the retention horizon.
--
-- A key part (object id, event, kind) is escaped: '%' -> '%25', ':' -> '%3A', NUL -> '%00'. Keys
-- and lanes whose parts hold none of these three characters (every CHIP id and event) are
-- unchanged, so the idempotency keys already handed to handlers stay the same. SQLite's replace()
-- cannot replace a NUL, so NULs are replaced last, byte by byte.

-- Deliveries stored while their updated_on was at or below the horizon: never handed over.
ALTER TABLE chip_inbox_deliveries ADD COLUMN expired INTEGER NOT NULL DEFAULT 0;

-- One row: the newest updated_on among the deliveries retention removed (NULL: none yet). A
-- delivery at or below it may repeat one the inbox no longer remembers.
CREATE TABLE chip_inbox_horizon (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    updated_on INTEGER
);
-- An inbox in use before this version may have removed deliveries (and their objects' marks)
-- without recording what: take everything more than 48 hours old (CHIP retries for 36) as
-- possibly forgotten. A new inbox starts with nothing forgotten.
INSERT INTO chip_inbox_horizon (id, updated_on)
SELECT 1, CASE
    WHEN EXISTS (SELECT 1 FROM chip_inbox_deliveries) OR EXISTS (SELECT 1 FROM chip_inbox_lanes)
      OR EXISTS (SELECT 1 FROM chip_inbox_counters)
    THEN CAST(strftime('%s', 'now') AS INTEGER) - 172800
END;

-- Dedup keys with a character to escape: through a unique temporary name (so that no two rows
-- meet half-way), then to the escaped form; a key without updated_on keeps its body hash.
UPDATE chip_inbox_deliveries SET dedup_key = '~migrating~:' || id || ':' || dedup_key
WHERE object_id IS NOT NULL AND (
    instr(object_id, '%') > 0 OR instr(object_id, ':') > 0 OR instr(object_id, char(0)) > 0
    OR instr(event, '%') > 0 OR instr(event, ':') > 0 OR instr(event, char(0)) > 0);
UPDATE chip_inbox_deliveries SET dedup_key =
    replace(replace(object_id, '%', '%25'), ':', '%3A') || ':'
    || replace(replace(event, '%', '%25'), ':', '%3A') || ':'
    || CASE WHEN updated_on IS NOT NULL THEN CAST(updated_on AS TEXT)
            ELSE '-:sha256:' || CAST(substr(CAST(dedup_key AS BLOB), -64) AS TEXT) END
WHERE substr(dedup_key, 1, 12) = '~migrating~:';

-- Lanes of objects (`<kind>:<id>`; the kind never holds ':'): the id part escaped.
UPDATE chip_inbox_lanes SET lane = '~migrating~:' || lane
WHERE substr(lane, 1, 9) <> 'delivery:' AND instr(lane, ':') > 0 AND (
    instr(substr(lane, instr(lane, ':') + 1), '%') > 0
    OR instr(substr(lane, instr(lane, ':') + 1), ':') > 0
    OR instr(lane, char(0)) > 0);
-- (substr and instr on BLOBs count bytes and see past a NUL; on text they would stop at it).
UPDATE chip_inbox_lanes SET lane =
    CAST(substr(CAST(lane AS BLOB), 13, instr(substr(CAST(lane AS BLOB), 13), CAST(':' AS BLOB))) AS TEXT)
    || replace(replace(
        CAST(substr(CAST(lane AS BLOB), 13 + instr(substr(CAST(lane AS BLOB), 13), CAST(':' AS BLOB))) AS TEXT),
        '%', '%25'), ':', '%3A')
WHERE substr(lane, 1, 12) = '~migrating~:';
UPDATE chip_inbox_deliveries SET lane =
    object_kind || ':' || replace(replace(object_id, '%', '%25'), ':', '%3A')
WHERE object_id IS NOT NULL AND lane <>
    object_kind || ':' || replace(replace(object_id, '%', '%25'), ':', '%3A');

-- Deliveries the typed model could not read go to their object's lane: the kind is the body's
-- `type` (when a string; 'unknown' when another value), else the event's prefix.
CREATE TEMP TABLE chip_inbox_relane AS
SELECT d.id AS id, d.lane AS old_lane,
    replace(replace(
        COALESCE(
            CASE
                WHEN json_valid(CAST(d.body AS TEXT)) = 0 THEN NULL
                WHEN json_type(CAST(d.body AS TEXT)) <> 'object' THEN NULL
                WHEN json_type(CAST(d.body AS TEXT), '$.type') IS NULL THEN NULL
                WHEN json_type(CAST(d.body AS TEXT), '$.type') = 'text'
                    THEN json_extract(CAST(d.body AS TEXT), '$.type')
                ELSE 'unknown'
            END,
            NULLIF(CASE WHEN instr(CAST(d.event AS BLOB), CAST('.' AS BLOB)) > 0
                        THEN CAST(substr(CAST(d.event AS BLOB), 1,
                            instr(CAST(d.event AS BLOB), CAST('.' AS BLOB)) - 1) AS TEXT)
                        ELSE d.event END, ''),
            'unknown'),
        '%', '%25'), ':', '%3A')
    || ':' || replace(replace(d.object_id, '%', '%25'), ':', '%3A') AS new_lane
FROM chip_inbox_deliveries d
WHERE d.object_kind = 'unknown' AND d.object_id IS NOT NULL;
-- The newest state handled in the old lane carries over to the object's lane.
INSERT INTO chip_inbox_lanes (lane, handled_updated_on, handled_at)
SELECT r.new_lane, MAX(l.handled_updated_on), MAX(l.handled_at)
FROM chip_inbox_relane r JOIN chip_inbox_lanes l ON l.lane = r.old_lane
WHERE r.new_lane <> r.old_lane
GROUP BY r.new_lane
ON CONFLICT (lane) DO UPDATE SET
    handled_updated_on = CASE
        WHEN chip_inbox_lanes.handled_updated_on IS NULL THEN excluded.handled_updated_on
        WHEN excluded.handled_updated_on IS NULL THEN chip_inbox_lanes.handled_updated_on
        ELSE max(chip_inbox_lanes.handled_updated_on, excluded.handled_updated_on) END,
    handled_at = COALESCE(max(chip_inbox_lanes.handled_at, excluded.handled_at),
        chip_inbox_lanes.handled_at, excluded.handled_at);
UPDATE chip_inbox_deliveries SET lane = (SELECT r.new_lane FROM chip_inbox_relane r WHERE r.id = chip_inbox_deliveries.id)
WHERE id IN (SELECT id FROM chip_inbox_relane);
DROP TABLE chip_inbox_relane;

-- NULs, last (after '%' was escaped): each NUL byte of a key or lane becomes '%00'.
CREATE TEMP TABLE chip_inbox_unnul AS
WITH RECURSIVE walk(tbl, rid, rest, done) AS (
    SELECT 'key', id, CAST(dedup_key AS BLOB), CAST('' AS BLOB) FROM chip_inbox_deliveries
    WHERE instr(CAST(dedup_key AS BLOB), x'00') > 0
    UNION ALL
    SELECT 'lane', id, CAST(lane AS BLOB), CAST('' AS BLOB) FROM chip_inbox_deliveries
    WHERE instr(CAST(lane AS BLOB), x'00') > 0
    UNION ALL
    SELECT 'lanes', rowid, CAST(lane AS BLOB), CAST('' AS BLOB) FROM chip_inbox_lanes
    WHERE instr(CAST(lane AS BLOB), x'00') > 0
    UNION ALL
    SELECT tbl, rid, substr(rest, instr(rest, x'00') + 1),
        CAST(done || substr(rest, 1, instr(rest, x'00') - 1) || '%00' AS BLOB)
    FROM walk WHERE instr(rest, x'00') > 0
)
SELECT tbl, rid, CAST(done || rest AS TEXT) AS fixed FROM walk WHERE instr(rest, x'00') = 0;
UPDATE chip_inbox_deliveries SET dedup_key =
    (SELECT fixed FROM chip_inbox_unnul WHERE tbl = 'key' AND rid = chip_inbox_deliveries.id)
WHERE id IN (SELECT rid FROM chip_inbox_unnul WHERE tbl = 'key');
UPDATE chip_inbox_deliveries SET lane =
    (SELECT fixed FROM chip_inbox_unnul WHERE tbl = 'lane' AND rid = chip_inbox_deliveries.id)
WHERE id IN (SELECT rid FROM chip_inbox_unnul WHERE tbl = 'lane');
UPDATE chip_inbox_lanes SET lane =
    (SELECT fixed FROM chip_inbox_unnul WHERE tbl = 'lanes' AND rid = chip_inbox_lanes.rowid)
WHERE rowid IN (SELECT rid FROM chip_inbox_unnul WHERE tbl = 'lanes');
DROP TABLE chip_inbox_unnul;
