-- GDPR deletion leaves a tombstone per distinct id of the deleted person: late or retried events
-- of those ids are dropped (reason person_deleted) and can never bring the person back.
CREATE TABLE deleted_distinct_ids (
    project_id  bigint NOT NULL,
    distinct_id text NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, distinct_id)
);
