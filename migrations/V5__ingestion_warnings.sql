-- Dropped events, visible to the project: counts per day and reason, with a few recent examples.
CREATE TABLE ingestion_warnings (
    project_id bigint NOT NULL,
    day        date NOT NULL,
    reason     text NOT NULL,
    count      bigint NOT NULL DEFAULT 0,
    last_seen  timestamptz NOT NULL,
    -- At most 5, newest first: {"at", "field", "event_id", "name"}.
    examples   jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (project_id, day, reason)
);
