-- Typed columns filled by the origin's enrichment step, and pre-aggregated sessions.

ALTER TABLE events
    ADD COLUMN host            text,
    ADD COLUMN referrer_domain text,
    ADD COLUMN channel         text,
    ADD COLUMN utm_source      text,
    ADD COLUMN utm_medium      text,
    ADD COLUMN utm_campaign    text,
    ADD COLUMN utm_term        text,
    ADD COLUMN utm_content     text,
    ADD COLUMN browser         text,
    ADD COLUMN os              text,
    ADD COLUMN device_type     text;

-- One row per session, updated in the transaction that stores the session's new events. Counts
-- only grow for events that were new (the dedup on event_ids runs first), so a re-delivered event
-- never inflates them.
CREATE TABLE sessions (
    project_id      bigint NOT NULL,
    session_id      text NOT NULL,
    distinct_id     text NOT NULL,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz NOT NULL,
    duration_secs   double precision GENERATED ALWAYS AS (extract(epoch FROM ended_at - started_at)) STORED,
    pageviews       integer NOT NULL DEFAULT 0,
    events          integer NOT NULL DEFAULT 0,
    -- A bounce: one page view and nothing else.
    is_bounce       boolean GENERATED ALWAYS AS (pageviews <= 1 AND events <= 1) STORED,
    entry_at        timestamptz,
    entry_path      text,
    exit_at         timestamptz,
    exit_path       text,
    -- Attribution: from the session's earliest event.
    referrer        text,
    referrer_domain text,
    channel         text,
    utm_source      text,
    utm_medium      text,
    utm_campaign    text,
    utm_term        text,
    utm_content     text,
    country         text,
    browser         text,
    os              text,
    device_type     text,
    PRIMARY KEY (project_id, session_id)
);
-- Session metrics are "one project, a time range".
CREATE INDEX sessions_project_started ON sessions (project_id, started_at);
