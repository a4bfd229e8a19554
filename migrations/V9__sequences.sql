-- Event sequences per UTC day: one narrow row per (project, UTC day) holding the day's events as parallel
-- arrays in the order the raw queries walk them (time, then event id), with distinct ids, event names and page
-- paths as small per-project numbers.
--
-- Funnels, retention and paths whose definitions only use event name, page path and the bot flag read these
-- (about 20 bytes per event, a few rows per query) instead of the ~1 KB event rows. A day is rebuilt whole from
-- `events` by `store::sequences::rebuild_day`, called by the rollup job for every dirty UTC day. A query serves a
-- day from here only when its row exists and the day is not dirty, and reads every other day from `events`, so
-- its answer always equals the raw answer. Persons are not stored: distinct ids are mapped through
-- person_distinct_ids at query time, so an identity merge needs no rebuild. Because one array holds the whole
-- day in (time, event id) order, a merged person's events from several distinct ids come out in that order too.

CREATE TABLE day_sequences (
    project_id bigint NOT NULL,
    utc_day    date NOT NULL,
    -- Packed big-endian arrays, one entry per event (bytea: sent as one copy, where an int array costs a
    -- function call per element). Epoch microseconds as int8, ascending; ties ordered by event id.
    ts         bytea NOT NULL,
    -- sequence_distinct_ids.num of each event, int4.
    dids       bytea NOT NULL,
    -- sequence_values.num (kind 'n') of each event's name, int4.
    names      bytea NOT NULL,
    -- sequence_values.num (kind 'p') of a page event's path, 0 for other events, int4.
    paths      bytea NOT NULL,
    -- One byte per event, 1 for a bot.
    bots       bytea NOT NULL,
    PRIMARY KEY (project_id, utc_day)
);
-- A busy day runs to megabytes: stored out of line but uncompressed, so reading it costs no inflate.
ALTER TABLE day_sequences
    ALTER COLUMN ts SET STORAGE EXTERNAL,
    ALTER COLUMN dids SET STORAGE EXTERNAL,
    ALTER COLUMN names SET STORAGE EXTERNAL,
    ALTER COLUMN paths SET STORAGE EXTERNAL,
    ALTER COLUMN bots SET STORAGE EXTERNAL;

-- Numbers of distinct ids, per project (numbered under a per-project advisory lock by rebuild_day).
CREATE TABLE sequence_distinct_ids (
    project_id  bigint NOT NULL,
    distinct_id text NOT NULL,
    num         integer NOT NULL,
    PRIMARY KEY (project_id, distinct_id),
    UNIQUE (project_id, num)
);

-- Numbers of event names (kind 'n') and page paths (kind 'p'), per project; numbers start at 1.
CREATE TABLE sequence_values (
    project_id bigint NOT NULL,
    kind       "char" NOT NULL,
    value      text NOT NULL,
    num        integer NOT NULL,
    PRIMARY KEY (project_id, kind, value),
    UNIQUE (project_id, kind, num)
);
