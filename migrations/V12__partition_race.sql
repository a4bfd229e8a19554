-- Concurrent first writers of a new month raced on the partition's DDL: after waiting for the
-- advisory lock, the second writer's catalog lookup could still miss the table the first had just
-- committed (an advisory lock does not make PostgreSQL re-read the catalog the way a relation
-- lock does), so its CREATE failed with duplicate_table and the origin answered 500. Creating is
-- now idempotent whatever the catalog snapshot says: "already there" is success.
CREATE OR REPLACE FUNCTION nexus_ensure_event_partition(ts timestamptz) RETURNS text
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
    BEGIN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                       part, month_start, month_end);
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        NULL;
    END;
    RETURN part;
END
$$;
