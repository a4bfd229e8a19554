-- Foundation schema: projects, keys, events (idempotent on (project_id, event_id)), salts.
-- Every primary key and unique constraint starts with project_id (tenant), except the global key
-- lookup by hash, which must find the project from the key alone.

CREATE TABLE projects (
    project_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL,
    -- IANA name; day/week/month buckets are calendar periods in this zone.
    timezone        text NOT NULL DEFAULT 'UTC',
    -- Browser origins allowed to send events (CORS); empty means any origin.
    allowed_origins text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    project_id  bigint NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    key_id      bigint GENERATED ALWAYS AS IDENTITY,
    scope       text NOT NULL CHECK (scope IN ('write', 'read', 'admin')),
    -- The first characters of the key, to recognise it in lists; the key itself is never stored.
    prefix      text NOT NULL,
    -- sha256 of the whole key. Keys are 128-bit random, so a fast hash is enough (no brute force).
    key_hash    bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (project_id, key_id)
);
-- Every request resolves its key by hash.
CREATE UNIQUE INDEX api_keys_hash ON api_keys (key_hash);

CREATE TABLE events (
    project_id       bigint NOT NULL,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    name             text NOT NULL,
    distinct_id      text NOT NULL,
    anonymous_id     text,
    user_id          text,
    session_id       text,
    -- Skew-corrected event time (server clock); every query filters on it.
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
    inserted_at      timestamptz NOT NULL DEFAULT now(),
    -- Idempotency: a retried event (same client-made id) is never stored twice.
    PRIMARY KEY (project_id, event_id)
);
-- Time-range scans per project (events per day, every trend query).
CREATE INDEX events_project_time ON events (project_id, "timestamp");

-- Daily random salts for the visitor hash of direct (edge-less) ingest.
CREATE TABLE visitor_salts (
    day  date PRIMARY KEY,
    salt bytea NOT NULL
);
