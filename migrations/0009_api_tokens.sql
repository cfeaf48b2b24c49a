-- API tokens for scripts and OpenAI-compatible clients (`still token create`): a request sends
-- `Authorization: Bearer <token>`; only the token's SHA-256 is stored. The accounts issue adds a
-- role and folds worker tokens in.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    team_id       INTEGER NOT NULL REFERENCES teams(id),
    name          TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_sha256  TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_used_at  TEXT,
    revoked_at    TEXT
);
