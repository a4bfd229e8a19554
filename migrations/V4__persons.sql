-- Persons and their distinct ids. Events keep the distinct id they were sent with; a person is
-- found through person_distinct_ids, so merging two persons re-points ids and never rewrites
-- events (an identify merges the anonymous history by re-pointing the anonymous id).

CREATE TABLE persons (
    project_id    bigint NOT NULL,
    person_id     uuid NOT NULL,
    properties    jsonb NOT NULL DEFAULT '{}',
    -- Set by identify (a user id is known). Two identified persons are never merged implicitly.
    is_identified boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, person_id)
);

CREATE TABLE person_distinct_ids (
    project_id  bigint NOT NULL,
    distinct_id text NOT NULL,
    person_id   uuid NOT NULL,
    PRIMARY KEY (project_id, distinct_id)
);
-- Merges re-point all ids of a person; person pages list them.
CREATE INDEX person_distinct_ids_person ON person_distinct_ids (project_id, person_id);
