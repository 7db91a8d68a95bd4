-- chip-gate-inbox schema, version 2 (PostgreSQL): injective dedup keys and lanes, lanes by object
-- identity whatever the typing result, and the retention horizon.
--
-- A key part (object id, event, kind) is escaped: '%' -> '%25', ':' -> '%3A' (and NUL -> '%00',
-- which PostgreSQL text never held). Keys and lanes whose parts hold neither character (every
-- CHIP id and event) are unchanged, so the idempotency keys already handed to handlers stay the
-- same.

-- Deliveries stored while their updated_on was at or below the horizon: never handed over.
ALTER TABLE chip_inbox_deliveries ADD COLUMN expired BIGINT NOT NULL DEFAULT 0;

-- One row: the newest updated_on among the deliveries retention removed (NULL: none yet). A
-- delivery at or below it may repeat one the inbox no longer remembers. Intake reads it FOR SHARE
-- and retention raises it FOR UPDATE before removing anything, so no delivery is stored against
-- a horizon older than the removal of its original.
CREATE TABLE chip_inbox_horizon (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    updated_on BIGINT
);
-- An inbox in use before this version may have removed deliveries (and their objects' marks)
-- without recording what: take everything more than 48 hours old (CHIP retries for 36) as
-- possibly forgotten. A new inbox starts with nothing forgotten.
INSERT INTO chip_inbox_horizon (id, updated_on)
SELECT 1, CASE
    WHEN EXISTS (SELECT 1 FROM chip_inbox_deliveries) OR EXISTS (SELECT 1 FROM chip_inbox_lanes)
      OR EXISTS (SELECT 1 FROM chip_inbox_counters)
    THEN CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) - 172800
END;

-- Dedup keys with a character to escape: through a unique temporary name (so that no two rows
-- meet half-way), then to the escaped form; a key without updated_on keeps its body hash.
UPDATE chip_inbox_deliveries SET dedup_key = '~migrating~:' || id || ':' || dedup_key
WHERE object_id IS NOT NULL AND (
    strpos(object_id, '%') > 0 OR strpos(object_id, ':') > 0
    OR strpos(event, '%') > 0 OR strpos(event, ':') > 0);
UPDATE chip_inbox_deliveries SET dedup_key =
    replace(replace(object_id, '%', '%25'), ':', '%3A') || ':'
    || replace(replace(event, '%', '%25'), ':', '%3A') || ':'
    || CASE WHEN updated_on IS NOT NULL THEN CAST(updated_on AS TEXT)
            ELSE '-:sha256:' || right(dedup_key, 64) END
WHERE left(dedup_key, 12) = '~migrating~:';

-- Lanes of objects (`<kind>:<id>`; the kind never holds ':'): the id part escaped.
UPDATE chip_inbox_lanes SET lane = '~migrating~:' || lane
WHERE left(lane, 9) <> 'delivery:' AND strpos(lane, ':') > 0 AND (
    strpos(substr(lane, strpos(lane, ':') + 1), '%') > 0
    OR strpos(substr(lane, strpos(lane, ':') + 1), ':') > 0);
UPDATE chip_inbox_lanes SET lane =
    substr(lane, 13, strpos(substr(lane, 13), ':'))
    || replace(replace(substr(lane, 13 + strpos(substr(lane, 13), ':')), '%', '%25'), ':', '%3A')
WHERE left(lane, 12) = '~migrating~:';
UPDATE chip_inbox_deliveries SET lane =
    object_kind || ':' || replace(replace(object_id, '%', '%25'), ':', '%3A')
WHERE object_id IS NOT NULL
  AND lane <> object_kind || ':' || replace(replace(object_id, '%', '%25'), ':', '%3A');

-- Deliveries the typed model could not read go to their object's lane: the kind is the body's
-- `type` (when a string; 'unknown' when another value), else the event's prefix. (A function and
-- a table of the schema's own, dropped again below: no TEMP privilege needed.)
CREATE FUNCTION chip_inbox_kind_0002(body BYTEA, event TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    doc JSON;
    prefix TEXT;
BEGIN
    BEGIN
        doc := convert_from(body, 'UTF8')::json;
        IF json_typeof(doc) = 'object' AND json_typeof(doc -> 'type') IS NOT NULL THEN
            IF json_typeof(doc -> 'type') = 'string' THEN
                RETURN doc ->> 'type';
            END IF;
            RETURN 'unknown';
        END IF;
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    prefix := split_part(event, '.', 1);
    RETURN CASE WHEN prefix = '' THEN 'unknown' ELSE prefix END;
END $$;
CREATE TABLE chip_inbox_relane_0002 AS
SELECT d.id AS id, d.lane AS old_lane,
    replace(replace(chip_inbox_kind_0002(d.body, d.event), '%', '%25'), ':', '%3A')
    || ':' || replace(replace(d.object_id, '%', '%25'), ':', '%3A') AS new_lane
FROM chip_inbox_deliveries d
WHERE d.object_kind = 'unknown' AND d.object_id IS NOT NULL;
-- The newest state handled in the old lane carries over to the object's lane.
INSERT INTO chip_inbox_lanes (lane, handled_updated_on, handled_at)
SELECT r.new_lane, MAX(l.handled_updated_on), MAX(l.handled_at)
FROM chip_inbox_relane_0002 r JOIN chip_inbox_lanes l ON l.lane = r.old_lane
WHERE r.new_lane <> r.old_lane
GROUP BY r.new_lane
ON CONFLICT (lane) DO UPDATE SET
    handled_updated_on = GREATEST(chip_inbox_lanes.handled_updated_on, excluded.handled_updated_on),
    handled_at = GREATEST(chip_inbox_lanes.handled_at, excluded.handled_at);
UPDATE chip_inbox_deliveries d SET lane = r.new_lane
FROM chip_inbox_relane_0002 r WHERE r.id = d.id AND d.lane <> r.new_lane;
DROP TABLE chip_inbox_relane_0002;
DROP FUNCTION chip_inbox_kind_0002(BYTEA, TEXT);
