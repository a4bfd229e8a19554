-- Events partitioned by month on the (skew-corrected) event time, deduplicated across partitions.
--
-- PostgreSQL refuses a unique constraint on a partitioned table unless it contains the partition
-- column, and a retried event's corrected timestamp moves by milliseconds between deliveries: a
-- unique key on (project_id, event_id, "timestamp") would let both deliveries in. So the dedup
-- key lives in its own unpartitioned table, `event_ids`, written in the same statement as the
-- event row: an id is stored once, whichever partition its first delivery landed in.

CREATE TABLE event_ids (
    project_id  bigint NOT NULL,
    event_id    uuid NOT NULL,
    -- Where the row went (its partition), for deletions and retention.
    "timestamp" timestamptz NOT NULL,
    PRIMARY KEY (project_id, event_id)
);

ALTER TABLE events RENAME TO events_v1;
ALTER INDEX events_project_time RENAME TO events_v1_project_time;

CREATE TABLE events (
    project_id       bigint NOT NULL,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    name             text NOT NULL,
    distinct_id      text NOT NULL,
    anonymous_id     text,
    user_id          text,
    session_id       text,
    "timestamp"      timestamptz NOT NULL,
    client_timestamp timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    url              text,
    path             text,
    title            text,
    referrer         text,
    properties       jsonb NOT NULL DEFAULT '{}',
    person_set       jsonb NOT NULL DEFAULT '{}',
    person_set_once  jsonb NOT NULL DEFAULT '{}',
    context          jsonb NOT NULL DEFAULT '{}',
    group_type       text,
    group_key        text,
    previous_id      text,
    country          text,
    region           text,
    city             text,
    continent        text,
    geo              jsonb NOT NULL DEFAULT '{}',
    visitor_hash     text,
    is_bot           boolean NOT NULL DEFAULT false,
    user_agent       text,
    inserted_at      timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE ("timestamp");
-- Every query is "one project, a time range".
CREATE INDEX events_project_time ON events (project_id, "timestamp");

-- Partitions are months, named events_pYYYYMM. Creating one is idempotent and serialised by an
-- advisory lock, so concurrent writers and replicas never race on the DDL.
CREATE FUNCTION nexus_ensure_event_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month_end   timestamptz := (date_trunc('month', ts AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    part        text := 'events_p' || to_char(ts AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('nexus_event_partitions'));
    IF to_regclass(part) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                       part, month_start, month_end);
    END IF;
    RETURN part;
END
$$;

-- Move the rows of version 1 (partitions for every month they cover, then rows and ids).
DO $$
DECLARE m timestamptz;
BEGIN
    FOR m IN SELECT DISTINCT date_trunc('month', "timestamp") FROM events_v1 LOOP
        PERFORM nexus_ensure_event_partition(m);
    END LOOP;
    -- And the current month and the next two, so a fresh install has somewhere to write.
    PERFORM nexus_ensure_event_partition(now());
    PERFORM nexus_ensure_event_partition(now() + interval '1 month');
    PERFORM nexus_ensure_event_partition(now() + interval '2 months');
END
$$;
INSERT INTO events SELECT * FROM events_v1;
INSERT INTO event_ids (project_id, event_id, "timestamp") SELECT project_id, event_id, "timestamp" FROM events_v1;
DROP TABLE events_v1;

-- Background jobs (partition creation now; retention and rollups later) take their turn through
-- this table with FOR UPDATE SKIP LOCKED: with several origin replicas, one runs a due job and
-- the others skip it, never running it twice.
CREATE TABLE jobs (
    name        text PRIMARY KEY,
    next_run_at timestamptz NOT NULL DEFAULT now(),
    last_run_at timestamptz,
    last_runner text,
    runs        bigint NOT NULL DEFAULT 0
);
INSERT INTO jobs (name) VALUES ('create_partitions');
