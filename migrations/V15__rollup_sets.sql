-- Rollup sets (issue #6): per project-local day, for each event selector (all events, one event
-- type, one event name) and each single dimension (none, path, country, ...), the events count
-- and the set of distinct-id numbers (`sequence_distinct_ids.num`) as a serialised roaring bitmap.
-- Dashboard questions of one selector and at most one dimension (daily unique persons, top pages
-- by visitors, a breakdown by country) are answered from a few of these rows: unique persons are
-- the distinct persons of the union of the sets, mapped through the origin's in-memory copy of
-- the distinct id -> person mapping (kept exact by `person_map_log`, below). Bots are left out
-- (a query that asks for them reads the raw events). Rebuilt per local day by the rollup job, with
-- R1 and R2, under the same dirty marks.
CREATE TABLE rollup_daily_sets (
    project_id bigint NOT NULL,
    day        date NOT NULL,
    -- '' every event, 't:<event type>', 'n:<event name>'.
    sel        text NOT NULL,
    -- '' no dimension, else the event column (`path`, `country`, ...).
    dim        text NOT NULL,
    -- The column's value; NULL when unset (and for dim '').
    value      text,
    events     bigint NOT NULL,
    dids       bytea NOT NULL
);
-- A query reads one (selector, dimension) over a range of days.
CREATE INDEX rollup_daily_sets_read ON rollup_daily_sets (project_id, sel, dim, day);
CREATE INDEX rollup_daily_sets_day ON rollup_daily_sets (project_id, day);
ALTER TABLE rollup_daily_sets ALTER COLUMN dids SET STORAGE EXTERNAL;

-- Every change of the distinct id -> person mapping, with the transaction that made it, so that
-- a copy of the mapping taken in one snapshot can be brought to a later snapshot exactly: the
-- changes to re-read are those whose transaction the earlier snapshot did not see
-- (`pg_visible_in_snapshot`). Written by statement triggers (identity changes are rare next to
-- events: ingest of plain events never touches it).
CREATE TABLE person_map_log (
    project_id  bigint NOT NULL,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    distinct_id text NOT NULL
);
CREATE INDEX person_map_log_txid ON person_map_log (project_id, txid);

CREATE FUNCTION person_map_log_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO person_map_log (project_id, distinct_id) SELECT project_id, distinct_id FROM changed;
    RETURN NULL;
END $$;

CREATE TRIGGER person_map_log_insert AFTER INSERT ON person_distinct_ids
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION person_map_log_new();
CREATE TRIGGER person_map_log_update AFTER UPDATE ON person_distinct_ids
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION person_map_log_new();
CREATE TRIGGER person_map_log_delete AFTER DELETE ON person_distinct_ids
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION person_map_log_new();

-- The days stored so far have no sets yet: every day with events is marked dirty once.
INSERT INTO rollup_dirty (project_id, utc_day)
SELECT DISTINCT project_id, ("timestamp" AT TIME ZONE 'UTC')::date FROM events;

-- One random id per database: the origin's in-memory copies of the mapping are keyed by it, so a
-- process that talks to several databases (tests do) never mixes them up.
CREATE TABLE nexus_instance (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    id  uuid NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO nexus_instance DEFAULT VALUES;
