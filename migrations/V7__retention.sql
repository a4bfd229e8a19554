-- Per-project data retention, enforced by the background job `retention`.
ALTER TABLE projects ADD COLUMN retention_days integer CHECK (retention_days IS NULL OR retention_days > 0);
INSERT INTO jobs (name) VALUES ('retention');
