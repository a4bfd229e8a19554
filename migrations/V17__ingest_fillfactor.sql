-- Ingest updates each session row again with every write group that brings events of that
-- session. With full pages an update cannot stay on its row's page, so it writes a new entry
-- into both of the table's indexes (a "non-HOT" update); with room left on the page it is a
-- heap-only (HOT) update that touches no index. Leave a third of each page free for them.
-- (Applies to pages written from now on; existing pages are not rewritten.)
ALTER TABLE sessions SET (fillfactor = 70);
