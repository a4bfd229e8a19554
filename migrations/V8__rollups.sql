-- Daily rollups (issue #6): pre-aggregated rows per project-local calendar day, kept exact by
-- dirty marks. Every write that adds or removes events marks the UTC days it touched in
-- `rollup_dirty` inside its own transaction; the `rollups` job recomputes the local days those
-- UTC days overlap from the raw events and clears a mark only if no write re-marked it meanwhile
-- (`seq`). Queries read the rollups for clean days and the raw events for dirty ones.

CREATE SEQUENCE rollup_dirty_seq;

CREATE TABLE rollup_dirty (
    project_id bigint NOT NULL,
    utc_day    date NOT NULL,
    -- Bumped by every new mark, so the job can tell "still the mark I recomputed" from "marked again".
    seq        bigint NOT NULL DEFAULT nextval('rollup_dirty_seq'),
    PRIMARY KEY (project_id, utc_day)
);

-- R1: events per local day and every combination of the dimensions dashboards filter and split by.
-- No unique key: the dimensions are nullable and paths can be long; the job serialises the
-- recompute of one (project, day) with an advisory lock instead.
CREATE TABLE rollup_daily_counts (
    project_id  bigint NOT NULL,
    day         date NOT NULL,
    name        text NOT NULL,
    event_type  text NOT NULL,
    path        text,
    country     text,
    channel     text,
    device_type text,
    browser     text,
    os          text,
    utm_source  text,
    is_bot      boolean NOT NULL,
    events      bigint NOT NULL
);
CREATE INDEX rollup_daily_counts_day ON rollup_daily_counts (project_id, day);

-- R2: events per local day and distinct id (with country and the bot flag), for unique persons:
-- the person mapping is joined at query time, so identity merges need no recompute.
CREATE TABLE rollup_daily_persons (
    project_id  bigint NOT NULL,
    day         date NOT NULL,
    distinct_id text NOT NULL,
    country     text,
    is_bot      boolean NOT NULL,
    events      bigint NOT NULL
);
CREATE INDEX rollup_daily_persons_day ON rollup_daily_persons (project_id, day, distinct_id);

-- Events stored before this version have no marks yet: every day with events starts dirty.
INSERT INTO rollup_dirty (project_id, utc_day)
SELECT DISTINCT project_id, ("timestamp" AT TIME ZONE 'UTC')::date FROM events;

INSERT INTO jobs (name) VALUES ('rollups');
