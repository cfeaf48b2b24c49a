-- A dataset's revision counts every change to its live rows (imports, edits, trash, restore,
-- tags). A version records the revision it was cut at, so a new run re-uses the latest version
-- only when nothing changed since: timestamps of the same millisecond cannot tell that.
ALTER TABLE datasets ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dataset_versions ADD COLUMN dataset_revision INTEGER NOT NULL DEFAULT -1;
-- Versions cut before this migration: the latest one still matches when no change came after it.
UPDATE dataset_versions SET dataset_revision = 0
WHERE created_at >= (SELECT updated_at FROM datasets d WHERE d.id = dataset_versions.dataset_id);

-- What the worker made of the run's dataset (set when training starts).
ALTER TABLE runs ADD COLUMN n_trained INTEGER;
ALTER TABLE runs ADD COLUMN n_truncated INTEGER;
ALTER TABLE runs ADD COLUMN n_skipped INTEGER;

-- Live rows by dataset without touching the rows themselves: the examples page counts up to
-- 10,000 matches, and with `deleted_at` only in the table that count read ~40 MB of row pages.
CREATE INDEX examples_live ON examples (dataset_id, deleted_at, id);
