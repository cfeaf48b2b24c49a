-- The artifact store, run logs, and what a job needs of the worker that claims it.

-- Content-addressed files: each lives once under DATA_DIR/artifacts/<2 hex>/<sha256>, however
-- many checkpoints, runs or models name it.
CREATE TABLE artifacts (
    sha256      TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    size        INTEGER NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- The files of a run's folders: its checkpoints ('step-N') and its final model ('final').
-- A folder is `committed` once every file arrived (a worker commits it; a half-uploaded
-- checkpoint is never a resume point and is never offered for download).
CREATE TABLE run_files (
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    folder      TEXT NOT NULL CHECK (folder = 'final' OR folder GLOB 'step-[0-9]*'),
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL REFERENCES artifacts(sha256),
    size        INTEGER NOT NULL,
    committed   INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (run_id, folder, name)
) WITHOUT ROWID;

-- A run's log: the server's lines (claims, lease expiries, outcomes) and the worker's, which
-- carry a per-attempt sequence number so a retried upload cannot duplicate a line.
CREATE TABLE run_logs (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    seq         INTEGER,
    source      TEXT NOT NULL CHECK (source IN ('server', 'worker')),
    level       TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message     TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (run_id, attempt, seq)
);
CREATE INDEX run_logs_run ON run_logs (run_id, id);

-- What a job needs: a device kind ('cpu', 'cuda'; NULL = any) and memory (the run's estimate;
-- a worker that reports less does not claim it; a worker reporting 0 is not checked).
ALTER TABLE jobs ADD COLUMN device TEXT CHECK (device IS NULL OR device IN ('cpu', 'cuda'));
ALTER TABLE jobs ADD COLUMN min_memory_bytes INTEGER NOT NULL DEFAULT 0;

-- Checkpoints written before the store existed are plain folders the store does not know:
-- a job waiting on one starts over from step 0.
UPDATE jobs SET resume_from = NULL;

-- A live run page asks for points after the last step it has.
CREATE INDEX run_metrics_step ON run_metrics (run_id, step);

-- Per-metric rollups at three widths of steps, kept as points arrive, so a curve of any length
-- is drawn from a few thousand rows: the count and the (step, value) of the smallest and
-- largest value in each bucket of `width` steps (bucket = step / width).
CREATE TABLE run_metric_buckets (
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    width       INTEGER NOT NULL,
    bucket      INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    min_step    INTEGER NOT NULL,
    min_value   REAL NOT NULL,
    max_step    INTEGER NOT NULL,
    max_value   REAL NOT NULL,
    PRIMARY KEY (run_id, name, width, bucket)
) WITHOUT ROWID;

-- Points stored before the rollups existed.
INSERT INTO run_metric_buckets (run_id, name, width, bucket, n, min_step, min_value, max_step, max_value)
SELECT m.run_id, m.name, w.width, m.step / w.width, count(*),
       0, min(m.value), 0, max(m.value)
FROM run_metrics m, (SELECT 64 AS width UNION ALL SELECT 512 UNION ALL SELECT 4096) w
GROUP BY m.run_id, m.name, w.width, m.step / w.width;
-- (Step ranges, not step / width, so each lookup is a range of the primary key.)
UPDATE run_metric_buckets AS b SET
    min_step = (SELECT min(step) FROM run_metrics m WHERE m.run_id = b.run_id AND m.name = b.name
                AND m.step >= b.bucket * b.width AND m.step < (b.bucket + 1) * b.width
                AND m.value = b.min_value),
    max_step = (SELECT min(step) FROM run_metrics m WHERE m.run_id = b.run_id AND m.name = b.name
                AND m.step >= b.bucket * b.width AND m.step < (b.bucket + 1) * b.width
                AND m.value = b.max_value);

-- Model folders a worker has on its own disk (`still worker --models-dir DIR`: the names of the
-- folders in DIR), as a JSON array. A run of a model registered with origin 'worker' goes only
-- to workers that have it.
ALTER TABLE workers ADD COLUMN models TEXT NOT NULL DEFAULT '[]';

-- The run form's memory estimate reads a dataset's longest row.
CREATE INDEX examples_longest ON examples (dataset_id, n_bytes);
