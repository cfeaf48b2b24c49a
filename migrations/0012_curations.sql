-- Curation: a recipe of stages (quality, difficulty, diversity, decontamination) run over a
-- pinned source version. Each finished stage cuts a version of the curation's output dataset
-- and records what it dropped and why; the last stage's rows are also the output's live rows.

CREATE TABLE curations (
    id                  INTEGER PRIMARY KEY,
    team_id             INTEGER NOT NULL REFERENCES teams(id),
    name                TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    dataset_id          INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    dataset_version_id  INTEGER NOT NULL REFERENCES dataset_versions(id) ON DELETE CASCADE,
    output_dataset_id   INTEGER REFERENCES datasets(id) ON DELETE SET NULL,
    -- The recipe as it runs (`Recipe` JSON: a preset expanded, the request's overrides applied).
    recipe              TEXT NOT NULL,
    recipe_name         TEXT,
    seed                INTEGER NOT NULL,
    status              TEXT NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')),
    error               TEXT,
    -- The source's domains and trace lengths (JSON), set when its rows are first read.
    source_detail       TEXT,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at         TEXT,
    UNIQUE (team_id, name)
);
CREATE INDEX curations_active ON curations (status, id);
CREATE INDEX curations_dataset ON curations (dataset_id);

-- A finished stage: its counts, the version it cut, and its kept rows (source ordinals, JSON).
CREATE TABLE curation_stages (
    curation_id  INTEGER NOT NULL REFERENCES curations(id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL CHECK (idx >= 0),
    name         TEXT NOT NULL,
    n_in         INTEGER NOT NULL,
    n_out        INTEGER NOT NULL,
    version_id   INTEGER REFERENCES dataset_versions(id) ON DELETE SET NULL,
    -- Rules with counts, the output's domains and trace-length statistics (JSON).
    detail       TEXT NOT NULL,
    kept         TEXT NOT NULL,
    PRIMARY KEY (curation_id, idx)
) WITHOUT ROWID;
CREATE INDEX curation_stages_version ON curation_stages (version_id);

-- Every row a stage dropped: its position in the source version, the rule, and why.
CREATE TABLE curation_drops (
    curation_id  INTEGER NOT NULL REFERENCES curations(id) ON DELETE CASCADE,
    stage        INTEGER NOT NULL,
    ordinal      INTEGER NOT NULL,
    rule         TEXT NOT NULL,
    detail       TEXT NOT NULL,
    PRIMARY KEY (curation_id, stage, ordinal)
) WITHOUT ROWID;
CREATE INDEX curation_drops_rule ON curation_drops (curation_id, stage, rule, ordinal);

-- The difficulty stage's evals, one per reference model, in the recipe's order.
CREATE TABLE curation_evals (
    curation_id  INTEGER NOT NULL REFERENCES curations(id) ON DELETE CASCADE,
    stage        INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    eval_id      INTEGER NOT NULL REFERENCES evals(id) ON DELETE CASCADE,
    PRIMARY KEY (curation_id, stage, position)
) WITHOUT ROWID;

-- Named recipes a team saved (`s1` is built in, never stored).
CREATE TABLE curation_recipes (
    id          INTEGER PRIMARY KEY,
    team_id     INTEGER NOT NULL REFERENCES teams(id),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    recipe      TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (team_id, name)
);

-- Trace lengths in tokens per (tokenizer, row content), counted once.
CREATE TABLE trace_tokens (
    tokenizer  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (tokenizer, hash)
) WITHOUT ROWID;
