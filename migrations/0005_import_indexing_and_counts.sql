-- Faster imports and statistics kept up to date.
--
-- 1. An import indexes its rows for search in one statement after inserting them, instead of one
--    trigger call per row (60,000 rows with ~4 KB traces: the per-row path was most of the import).
--    The insert trigger therefore skips rows that carry an import id; every other insert (a row
--    added in the browser, a run's generated rows) is still indexed by the trigger. Updates and
--    deletes are indexed by their triggers whatever the row's origin.
DROP TRIGGER examples_fts_insert;
CREATE TRIGGER examples_fts_insert AFTER INSERT ON examples WHEN new.import_id IS NULL BEGIN
    INSERT INTO examples_fts (rowid, question, thinking, answer)
    VALUES (new.id, new.question, new.thinking, new.answer);
END;
-- FTS5 writes a segment each time its in-memory term table fills (1 MB by default) and merges
-- segments as they pile up; a 16 MB table writes and merges a sixteenth as often.
INSERT INTO examples_fts (examples_fts, rank) VALUES ('hashsize', 16777216);

-- 2. How many live rows of a dataset have each length and each source and domain, so statistics
--    read a few hundred counts instead of every row (whose length columns sit behind its text).
--    `facet` is a column of `examples`: question_words, thinking_words, answer_words, source or
--    domain; `value` is that column's value. Rows whose count fell to 0 may stay (readers skip them).
CREATE TABLE example_counts (
    dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    facet       TEXT NOT NULL,
    value       NOT NULL,  -- no declared type: integers stay integers, text stays text
    n           INTEGER NOT NULL,
    PRIMARY KEY (dataset_id, facet, value)
) WITHOUT ROWID;

INSERT INTO example_counts (dataset_id, facet, value, n)
SELECT dataset_id, 'question_words', question_words, count(*) FROM examples
WHERE deleted_at IS NULL GROUP BY dataset_id, question_words
UNION ALL
SELECT dataset_id, 'thinking_words', thinking_words, count(*) FROM examples
WHERE deleted_at IS NULL GROUP BY dataset_id, thinking_words
UNION ALL
SELECT dataset_id, 'answer_words', answer_words, count(*) FROM examples
WHERE deleted_at IS NULL GROUP BY dataset_id, answer_words
UNION ALL
SELECT dataset_id, 'source', source, count(*) FROM examples
WHERE deleted_at IS NULL GROUP BY dataset_id, source
UNION ALL
SELECT dataset_id, 'domain', domain, count(*) FROM examples
WHERE deleted_at IS NULL GROUP BY dataset_id, domain;

-- Kept by triggers; an import adds its rows' counts itself (it has them at hand), so like the
-- search index the insert trigger skips rows with an import id.
CREATE TRIGGER examples_counts_insert AFTER INSERT ON examples
WHEN new.import_id IS NULL AND new.deleted_at IS NULL BEGIN
    INSERT INTO example_counts (dataset_id, facet, value, n)
    SELECT new.dataset_id, f, v, 1 FROM (
        SELECT 'question_words' AS f, new.question_words AS v
        UNION ALL SELECT 'thinking_words', new.thinking_words
        UNION ALL SELECT 'answer_words', new.answer_words
        UNION ALL SELECT 'source', new.source
        UNION ALL SELECT 'domain', new.domain
    ) WHERE true
    ON CONFLICT (dataset_id, facet, value) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER examples_counts_delete AFTER DELETE ON examples
WHEN old.deleted_at IS NULL BEGIN
    UPDATE example_counts SET n = n - 1
    WHERE dataset_id = old.dataset_id AND (facet, value) IN (
        SELECT 'question_words', old.question_words
        UNION ALL SELECT 'thinking_words', old.thinking_words
        UNION ALL SELECT 'answer_words', old.answer_words
        UNION ALL SELECT 'source', old.source
        UNION ALL SELECT 'domain', old.domain
    );
END;

CREATE TRIGGER examples_counts_update
AFTER UPDATE OF question_words, thinking_words, answer_words, source, domain, deleted_at ON examples
BEGIN
    UPDATE example_counts SET n = n - 1
    WHERE old.deleted_at IS NULL AND dataset_id = old.dataset_id AND (facet, value) IN (
        SELECT 'question_words', old.question_words
        UNION ALL SELECT 'thinking_words', old.thinking_words
        UNION ALL SELECT 'answer_words', old.answer_words
        UNION ALL SELECT 'source', old.source
        UNION ALL SELECT 'domain', old.domain
    );
    INSERT INTO example_counts (dataset_id, facet, value, n)
    SELECT new.dataset_id, f, v, 1 FROM (
        SELECT 'question_words' AS f, new.question_words AS v
        UNION ALL SELECT 'thinking_words', new.thinking_words
        UNION ALL SELECT 'answer_words', new.answer_words
        UNION ALL SELECT 'source', new.source
        UNION ALL SELECT 'domain', new.domain
    ) WHERE new.deleted_at IS NULL
    ON CONFLICT (dataset_id, facet, value) DO UPDATE SET n = n + 1;
END;
