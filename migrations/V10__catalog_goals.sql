-- The event catalog (maintained at ingest, in the transaction that stores the events) and saved goals.
--
-- Every counter row has a `shard` (the writing backend's pid modulo a small number): a popular
-- event name would otherwise be one hot row that concurrent writer transactions queue on until
-- each one commits. Reads sum the shards.
--
-- The catalog only ever grows: deleting events or persons does not shrink its counts (they are
-- a guide for building queries, not an answer).

-- One row per event name: how many events, first and last seen (event time).
CREATE TABLE catalog_events (
    project_id  bigint NOT NULL,
    name        text NOT NULL,
    shard       smallint NOT NULL,
    volume      bigint NOT NULL,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    PRIMARY KEY (project_id, name, shard)
);

-- One row per (event name, property key): the JSON types seen, as a bit set (1 string, 2 number,
-- 4 bool, 8 object, 16 array, 32 null) OR-ed on each upsert. Written only when something is new,
-- so it needs no shards.
CREATE TABLE catalog_properties (
    project_id  bigint NOT NULL,
    event_name  text NOT NULL,
    key         text NOT NULL,
    types       integer NOT NULL,
    PRIMARY KEY (project_id, event_name, key)
);
-- The values endpoint tells a known key from an unknown one.
CREATE INDEX catalog_properties_key ON catalog_properties (project_id, key);

-- One row per property key (over all event names) and shard: how many distinct values are
-- tracked, and whether the key went past the cap in a shard (a high-cardinality key such as an
-- id: its values stop being counted, so the table stays bounded).
CREATE TABLE catalog_keys (
    project_id      bigint NOT NULL,
    key             text NOT NULL,
    shard           smallint NOT NULL,
    distinct_values integer NOT NULL,
    capped          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (project_id, key, shard)
);

-- Counted values of the keys under the cap (scalars only, in their text form).
CREATE TABLE catalog_values (
    project_id  bigint NOT NULL,
    key         text NOT NULL,
    value       text NOT NULL,
    shard       smallint NOT NULL,
    count       bigint NOT NULL,
    PRIMARY KEY (project_id, key, value, shard)
);

-- Saved goals: an event name with property conditions, or a page-path pattern (the definition
-- is the validated JSON the API accepted).
CREATE TABLE goals (
    project_id  bigint NOT NULL,
    goal_id     bigint GENERATED ALWAYS AS IDENTITY,
    name        text NOT NULL,
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, goal_id),
    UNIQUE (project_id, name)
);
