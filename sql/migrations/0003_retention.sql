-- Retention: one definition of "a job old enough to delete", shared by the statements that
-- delete its chunks and then the job itself (sql/cleanup.sql), so the two can never disagree.

-- Finished jobs past their retention: completed ones after p_completed_after, failed and
-- partially failed ones after p_failed_after, counted from completed_at (every path that
-- finishes a job sets it: finish_sync_job, fail_sync_job). Unfinished jobs never expire.
CREATE FUNCTION expired_sync_jobs(p_completed_after interval, p_failed_after interval)
RETURNS TABLE (id uuid)
LANGUAGE sql STABLE AS $$
    SELECT q.id
      FROM sync_queue AS q
     WHERE (q.status = 'completed' AND q.completed_at < now() - p_completed_after)
        OR (q.status IN ('failed', 'partial_failure') AND q.completed_at < now() - p_failed_after);
$$;
