-- Saved comparisons of runs: a named selection (run ids in order), an optional baseline run and
-- the page's view settings, so a comparison is a link the team (and a share) can open again.

CREATE TABLE comparisons (
    id          INTEGER PRIMARY KEY,
    team_id     INTEGER NOT NULL REFERENCES teams(id),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Run ids as a JSON array; a deleted run stays listed and is reported missing.
    runs        TEXT NOT NULL,
    baseline    INTEGER,
    settings    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (team_id, name)
);
