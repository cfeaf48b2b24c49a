-- Still's first schema: teams own everything; datasets hold editable examples; versions are
-- immutable snapshots that runs will pin. Timestamps are UTC RFC 3339 text.

CREATE TABLE teams (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- Until accounts exist every object belongs to this team.
INSERT INTO teams (id, name) VALUES (1, 'default');

-- Key/value facts about this data directory (e.g. whether the demo data was seeded).
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE datasets (
    id           INTEGER PRIMARY KEY,
    team_id      INTEGER NOT NULL REFERENCES teams(id),
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (team_id, name)
);

-- One row per import, with its report (rejected rows and reasons) kept for the UI.
CREATE TABLE imports (
    id          INTEGER PRIMARY KEY,
    dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    file_name   TEXT NOT NULL,
    format      TEXT NOT NULL,
    preset      TEXT NOT NULL,
    policy      TEXT NOT NULL,
    n_imported  INTEGER NOT NULL DEFAULT 0,
    n_rejected  INTEGER NOT NULL DEFAULT 0,
    report      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX imports_dataset ON imports (dataset_id, id);

CREATE TABLE examples (
    id              INTEGER PRIMARY KEY,
    dataset_id      INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    import_id       INTEGER REFERENCES imports(id) ON DELETE SET NULL,
    -- Record number in the imported file (1-based), for tracing a row back to its source.
    record_no       INTEGER,
    question        TEXT NOT NULL,
    thinking        TEXT NOT NULL DEFAULT '',
    answer          TEXT NOT NULL DEFAULT '',
    solution        TEXT,
    source          TEXT NOT NULL DEFAULT '',
    domain          TEXT NOT NULL DEFAULT '',
    metadata        TEXT NOT NULL DEFAULT '{}',
    -- Lengths in words (runs of non-whitespace) and total bytes, kept for statistics/filters.
    question_words  INTEGER NOT NULL DEFAULT 0,
    thinking_words  INTEGER NOT NULL DEFAULT 0,
    answer_words    INTEGER NOT NULL DEFAULT 0,
    n_bytes         INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Soft delete: the trash, emptied when the dataset's next version is cut.
    deleted_at      TEXT
);
CREATE INDEX examples_dataset ON examples (dataset_id, id);
CREATE INDEX examples_source ON examples (dataset_id, source, id);
CREATE INDEX examples_domain ON examples (dataset_id, domain, id);

CREATE TABLE example_tags (
    example_id  INTEGER NOT NULL REFERENCES examples(id) ON DELETE CASCADE,
    tag         TEXT NOT NULL CHECK (length(tag) BETWEEN 1 AND 100),
    PRIMARY KEY (example_id, tag)
) WITHOUT ROWID;
CREATE INDEX example_tags_tag ON example_tags (tag, example_id);

-- Full-text index over the three searchable fields, kept in step by triggers.
CREATE VIRTUAL TABLE examples_fts USING fts5 (
    question, thinking, answer,
    content = 'examples', content_rowid = 'id', tokenize = 'unicode61'
);
CREATE TRIGGER examples_fts_insert AFTER INSERT ON examples BEGIN
    INSERT INTO examples_fts (rowid, question, thinking, answer)
    VALUES (new.id, new.question, new.thinking, new.answer);
END;
CREATE TRIGGER examples_fts_delete AFTER DELETE ON examples BEGIN
    INSERT INTO examples_fts (examples_fts, rowid, question, thinking, answer)
    VALUES ('delete', old.id, old.question, old.thinking, old.answer);
END;
CREATE TRIGGER examples_fts_update AFTER UPDATE OF question, thinking, answer ON examples BEGIN
    INSERT INTO examples_fts (examples_fts, rowid, question, thinking, answer)
    VALUES ('delete', old.id, old.question, old.thinking, old.answer);
    INSERT INTO examples_fts (rowid, question, thinking, answer)
    VALUES (new.id, new.question, new.thinking, new.answer);
END;

-- Immutable versions. A version lists content-addressed rows; a row's body is its canonical JSON,
-- stored once however many versions share it.
CREATE TABLE example_blobs (
    hash  TEXT PRIMARY KEY,
    body  TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE dataset_versions (
    id            INTEGER PRIMARY KEY,
    dataset_id    INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    content_hash  TEXT NOT NULL,
    n_rows        INTEGER NOT NULL,
    message       TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (dataset_id, version)
);

CREATE TABLE dataset_version_rows (
    version_id  INTEGER NOT NULL REFERENCES dataset_versions(id) ON DELETE CASCADE,
    ordinal     INTEGER NOT NULL,
    -- The live example this row was taken from (NULL once that example is gone).
    example_id  INTEGER REFERENCES examples(id) ON DELETE SET NULL,
    blob_hash   TEXT NOT NULL REFERENCES example_blobs(hash),
    PRIMARY KEY (version_id, ordinal)
) WITHOUT ROWID;
CREATE INDEX dataset_version_rows_example ON dataset_version_rows (example_id);
