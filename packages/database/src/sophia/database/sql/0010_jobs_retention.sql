-- Finished jobs are purged after SOPHIA_JOBS_RETENTION_S: the sweep finds them by when they ended.
CREATE INDEX jobs_finished ON sophia_core.jobs (finished_at) WHERE status IN ('succeeded', 'failed');
