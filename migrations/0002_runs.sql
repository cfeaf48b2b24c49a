-- Runs, models, workers, and the one job queue every kind of job goes through.

-- Named models a run can use: HF folders on the server's disk, models made from scratch, and
-- every run's output (so a run's result can be the next run's base or teacher).
CREATE TABLE models (
    id          INTEGER PRIMARY KEY,
    team_id     INTEGER NOT NULL REFERENCES teams(id),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- 'scratch' (made here), 'folder' (registered path), 'run' (a run's final model)
    origin      TEXT NOT NULL,
    -- The HF folder on the server's disk.
    path        TEXT NOT NULL,
    run_id      INTEGER,
    n_params    INTEGER NOT NULL DEFAULT 0,
    vocab_size  INTEGER NOT NULL DEFAULT 0,
    config      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (team_id, name)
);

-- Worker processes. A token authenticates one worker; only its SHA-256 is stored.
CREATE TABLE workers (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL,
    token_sha256    TEXT NOT NULL UNIQUE,
    device          TEXT NOT NULL DEFAULT 'cpu',
    memory_bytes    INTEGER NOT NULL DEFAULT 0,
    last_seen_at    TEXT,
    revoked_at      TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE runs (
    id                  INTEGER PRIMARY KEY,
    team_id             INTEGER NOT NULL REFERENCES teams(id),
    name                TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    method              TEXT NOT NULL CHECK (method IN ('sft', 'kd')),
    model_id            INTEGER NOT NULL REFERENCES models(id),
    teacher_id          INTEGER REFERENCES models(id),
    dataset_id          INTEGER NOT NULL REFERENCES datasets(id),
    -- The immutable snapshot it trains on.
    dataset_version_id  INTEGER NOT NULL REFERENCES dataset_versions(id),
    -- The engine's TrainConfig, as JSON.
    params              TEXT NOT NULL,
    output_model_id     INTEGER REFERENCES models(id),
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (team_id, name)
);

-- The queue. `kind` says what to do ('train' now; evaluations and curation later).
CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY,
    team_id             INTEGER NOT NULL REFERENCES teams(id),
    kind                TEXT NOT NULL,
    run_id              INTEGER REFERENCES runs(id) ON DELETE CASCADE,
    status              TEXT NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority            INTEGER NOT NULL DEFAULT 0,
    attempts            INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL DEFAULT 3,
    lease_owner         INTEGER REFERENCES workers(id),
    lease_expires_at    TEXT,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    -- Checkpoint to resume from (a folder under the data directory), set as checkpoints arrive.
    resume_from         TEXT,
    error               TEXT,
    last_worker         INTEGER REFERENCES workers(id),
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at          TEXT,
    finished_at         TEXT
);
CREATE INDEX jobs_queue ON jobs (status, priority DESC, id);

-- One row per (run, metric, optimizer step): a retried upload cannot duplicate a point.
CREATE TABLE run_metrics (
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    step    INTEGER NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (run_id, name, step)
) WITHOUT ROWID;
