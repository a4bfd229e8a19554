-- The mapping change log is read only by copies refreshed recently (`store::idmap` reloads a copy
-- whole when its last refresh is older than 30 minutes), so the retention job deletes rows older
-- than a day: the log stays as small as a day of identity changes.
ALTER TABLE person_map_log ADD COLUMN at timestamptz NOT NULL DEFAULT now();
