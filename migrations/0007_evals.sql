-- Evaluations: a model × a pinned dataset version × budget settings, run as `eval` jobs on the
-- same queue. Each graded (example, budget) pair is one row of `eval_records`, stored once: a
-- worker killed mid-eval loses only what was in flight, and a retried upload changes nothing.

CREATE TABLE evals (
    id                  INTEGER PRIMARY KEY,
    team_id             INTEGER NOT NULL REFERENCES teams(id),
    name                TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    model_id            INTEGER NOT NULL REFERENCES models(id),
    -- Set when the model is a run's (its final model or one of its checkpoints).
    run_id              INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    dataset_id          INTEGER NOT NULL REFERENCES datasets(id),
    dataset_version_id  INTEGER NOT NULL REFERENCES dataset_versions(id),
    -- The engine's EvalSettings (budgets, forcing, decoding, answer preset), as JSON.
    settings            TEXT NOT NULL,
    -- Rows evaluated (the version's first `n_examples`).
    n_examples          INTEGER NOT NULL CHECK (n_examples >= 0),
    n_budgets           INTEGER NOT NULL CHECK (n_budgets >= 1),
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (team_id, name)
);

CREATE TABLE eval_records (
    eval_id         INTEGER NOT NULL REFERENCES evals(id) ON DELETE CASCADE,
    budget_index    INTEGER NOT NULL CHECK (budget_index >= 0),
    example_index   INTEGER NOT NULL CHECK (example_index >= 0),
    correct         INTEGER NOT NULL CHECK (correct IN (0, 1)),
    thinking_tokens INTEGER NOT NULL,
    -- The engine's EvalRecord (prompt, thinking and answer apart, marks, verdict), as JSON.
    record          TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (eval_id, budget_index, example_index)
) WITHOUT ROWID;

-- An eval's log, as a run's (`run_logs`).
CREATE TABLE eval_logs (
    id          INTEGER PRIMARY KEY,
    eval_id     INTEGER NOT NULL REFERENCES evals(id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    seq         INTEGER,
    source      TEXT NOT NULL CHECK (source IN ('server', 'worker')),
    level       TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message     TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (eval_id, attempt, seq)
);
CREATE INDEX eval_logs_eval ON eval_logs (eval_id, id);

-- A job reports to a run (train) or to an eval (eval).
ALTER TABLE jobs ADD COLUMN eval_id INTEGER REFERENCES evals(id) ON DELETE CASCADE;
CREATE INDEX jobs_eval ON jobs (eval_id);
