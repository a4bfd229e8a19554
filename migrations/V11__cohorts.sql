-- Cohorts: saved person sets, static (a list of distinct ids) or behavioural (a rule over
-- events and person properties), with membership materialised in cohort_members by the
-- background job `refresh_cohorts` (and on create). Queries filter and break down by cohort
-- through cohort_members, keyed like the queries' person key: 'p:' || person_id for a mapped
-- person, 'd:' || distinct_id otherwise.

CREATE TABLE cohorts (
    project_id   bigint NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    cohort_id    bigint GENERATED ALWAYS AS IDENTITY,
    name         text NOT NULL,
    -- 'static' or 'behavioural', derived from the definition.
    kind         text NOT NULL CHECK (kind IN ('static', 'behavioural')),
    definition   jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    refreshed_at timestamptz,
    members      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, cohort_id)
);

CREATE TABLE cohort_members (
    project_id bigint NOT NULL,
    cohort_id  bigint NOT NULL,
    person_key text NOT NULL,
    PRIMARY KEY (project_id, cohort_id, person_key),
    FOREIGN KEY (project_id, cohort_id) REFERENCES cohorts (project_id, cohort_id) ON DELETE CASCADE
);
-- A breakdown by cohort looks up the cohorts of a person.
CREATE INDEX cohort_members_person ON cohort_members (project_id, person_key);

INSERT INTO jobs (name) VALUES ('refresh_cohorts');
