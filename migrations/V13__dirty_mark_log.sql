-- Rollup dirty marks become an append-only log. With one row per (project, UTC day) every write
-- group of a project's current day updated the same row and held its lock until commit, so the
-- ingest writers of one project queued behind each other's WAL flush. Now a write appends a row
-- (no shared row, no wait); the job recomputes a day and deletes exactly the marks it read
-- (a mark committed after that read stays, so its events are recomputed next time).
ALTER TABLE rollup_dirty DROP CONSTRAINT rollup_dirty_pkey;
ALTER TABLE rollup_dirty ADD PRIMARY KEY (project_id, seq);
CREATE INDEX rollup_dirty_day ON rollup_dirty (project_id, utc_day);
