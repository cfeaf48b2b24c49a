-- Evals while a run trains: a run names eval datasets and budgets (`runs.evals`, a JSON list
-- of still_api::RunEval); each checkpoint it evaluates is registered as a model (origin
-- 'checkpoint') and evaluated like any model, the eval remembering the step it was taken at.
ALTER TABLE runs ADD COLUMN evals TEXT NOT NULL DEFAULT '[]';
ALTER TABLE evals ADD COLUMN step INTEGER;
CREATE INDEX evals_run ON evals (run_id, step);
