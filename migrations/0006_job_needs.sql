-- A job carries what a worker needs to claim it, so the queue's claim reads only `jobs` and
-- `workers`: the names of the models it uses that live only on workers' disks (a worker must
-- have every one of them). Device and memory were already here.
ALTER TABLE jobs ADD COLUMN worker_models TEXT NOT NULL DEFAULT '[]';
UPDATE jobs SET worker_models = (
    SELECT json_group_array(m.name) FROM runs r JOIN models m ON m.id IN (r.model_id, r.teacher_id)
    WHERE r.id = jobs.run_id AND m.origin = 'worker'
) WHERE run_id IS NOT NULL;
