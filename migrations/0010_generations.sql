-- Teacher trace generation: a pinned dataset version's questions answered by a teacher (a
-- registry model the engine runs, or an OpenAI-compatible endpoint), `n_samples` times each, as
-- `generate` jobs on the same queue. Each (example, sample) is one row of `generation_rows`,
-- stored once: a worker killed mid-way loses only what was in flight, and a resumed attempt is
-- told what is done, so it never asks the teacher (never pays) for a stored row again. Kept
-- rows are added to the output dataset as they arrive; a version of it is cut at the end.

CREATE TABLE generations (
    id                  INTEGER PRIMARY KEY,
    team_id             INTEGER NOT NULL REFERENCES teams(id),
    name                TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    dataset_id          INTEGER NOT NULL REFERENCES datasets(id),
    dataset_version_id  INTEGER NOT NULL REFERENCES dataset_versions(id),
    output_dataset_id   INTEGER REFERENCES datasets(id) ON DELETE SET NULL,
    -- `model`: a registry model (`model_id`) run by the engine on a worker; `openai`: an
    -- OpenAI-compatible endpoint at `base_url`, asked for `teacher_model`.
    teacher_kind        TEXT NOT NULL CHECK (teacher_kind IN ('model', 'openai')),
    teacher_model       TEXT NOT NULL,
    model_id            INTEGER REFERENCES models(id),
    base_url            TEXT,
    -- The endpoint's API key: handed to the worker that holds the job's lease, never returned
    -- by the API (which shows `api_key_hint`, its last four characters).
    api_key             TEXT,
    -- Prompt template, sampling, limits and the keep filter, as JSON (`GenerationSettings`).
    settings            TEXT NOT NULL,
    -- Questions asked (the version's first `n_examples`) and samples per question.
    n_examples          INTEGER NOT NULL CHECK (n_examples >= 1),
    n_samples           INTEGER NOT NULL CHECK (n_samples >= 1),
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (team_id, name)
);
CREATE INDEX generations_dataset ON generations (dataset_id);
CREATE INDEX generations_output ON generations (output_dataset_id);

CREATE TABLE generation_rows (
    generation_id      INTEGER NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
    example_index      INTEGER NOT NULL CHECK (example_index >= 0),
    sample_index       INTEGER NOT NULL CHECK (sample_index >= 0),
    -- `ok`: the teacher answered; `failed`: it did not (after retries), `error` says why.
    status             TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    -- Whether the row went into the output dataset (`keep: correct` drops wrong answers).
    kept               INTEGER NOT NULL CHECK (kept IN (0, 1)),
    -- The grader's verdict against the reference answer (NULL when there is none).
    correct            INTEGER CHECK (correct IN (0, 1)),
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    -- Thinking, answer, extracted answer, finish reason, retries, seconds (`GenerationRecord`).
    record             TEXT NOT NULL,
    error              TEXT,
    -- The output dataset's example made from it.
    example_id         INTEGER,
    attempt            INTEGER NOT NULL,
    created_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (generation_id, example_index, sample_index)
) WITHOUT ROWID;

-- A generation's log, as a run's (`run_logs`).
CREATE TABLE generation_logs (
    id             INTEGER PRIMARY KEY,
    generation_id  INTEGER NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
    attempt        INTEGER NOT NULL,
    seq            INTEGER,
    source         TEXT NOT NULL CHECK (source IN ('server', 'worker')),
    level          TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message        TEXT NOT NULL,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (generation_id, attempt, seq)
);
CREATE INDEX generation_logs_generation ON generation_logs (generation_id, id);

-- A job reports to a run (train), an eval (eval) or a generation (generate).
ALTER TABLE jobs ADD COLUMN generation_id INTEGER REFERENCES generations(id) ON DELETE CASCADE;
CREATE INDEX jobs_generation ON jobs (generation_id);
