-- The chunk state machine, one statement per transition, as functions the workers call.
--   pending ──claim──► processing ──complete──► completed
--                          │
--                          ├──fail (retryable, attempts left)──► retrying ──(next_attempt_at)──► claimable
--                          ├──fail (otherwise)──────────────────► failed
--                          └──lease expired (cleanup_stuck_chunks)──► pending | failed('stuck')
-- Every transition out of processing is fenced on (worker_id, attempts): a worker whose
-- claim was taken back can no longer write anything for that chunk.

-- Claim the next chunk of a job, in chunk_index order: a chunk is claimable only when every
-- chunk before it has finished (completed or failed), because it starts where they stopped.
CREATE FUNCTION claim_next_chunk_job(p_job_id uuid, p_worker_id text)
RETURNS SETOF chunked_sync_jobs
LANGUAGE sql AS $$
    UPDATE chunked_sync_jobs AS c
       SET status = 'processing',
           attempts = c.attempts + 1,
           worker_id = p_worker_id,
           heartbeat_at = now(),
           next_attempt_at = NULL,
           started_at = coalesce(c.started_at, now()),
           updated_at = now()
     WHERE c.id = (
            SELECT n.id
              FROM chunked_sync_jobs AS n
             WHERE n.parent_sync_job_id = p_job_id
               AND n.status IN ('pending', 'retrying')
               AND n.attempts < n.max_attempts
               AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
               AND NOT EXISTS (
                     SELECT 1
                       FROM chunked_sync_jobs AS e
                      WHERE e.parent_sync_job_id = n.parent_sync_job_id
                        AND e.chunk_index < n.chunk_index
                        AND e.status NOT IN ('completed', 'failed'))
             ORDER BY n.chunk_index
             LIMIT 1
               FOR UPDATE SKIP LOCKED)
    RETURNING c.*;
$$;

-- Renew the lease. False means the claim is gone: the worker must stop at once.
CREATE FUNCTION heartbeat_chunk(p_chunk_id uuid, p_worker_id text, p_attempt integer)
RETURNS boolean
LANGUAGE sql AS $$
    WITH renewed AS (
        UPDATE chunked_sync_jobs
           SET heartbeat_at = now()
         WHERE id = p_chunk_id AND status = 'processing'
           AND worker_id = p_worker_id AND attempts = p_attempt
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM renewed);
$$;

-- Finish a chunk. When the mailbox ran out (p_exhausted), the chunks planned after it have
-- nothing left to fetch and complete with it, empty, in the same statement.
CREATE FUNCTION complete_chunk_job(
    p_chunk_id uuid, p_worker_id text, p_attempt integer,
    p_emails_processed integer, p_emails_failed integer, p_api_calls integer,
    p_processing_time_ms integer, p_exhausted boolean)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_chunk chunked_sync_jobs;
BEGIN
    UPDATE chunked_sync_jobs
       SET status = 'completed',
           completed_at = now(),
           emails_processed = p_emails_processed,
           emails_failed = p_emails_failed,
           api_calls_made = api_calls_made + p_api_calls,
           processing_time_ms = processing_time_ms + p_processing_time_ms,
           error_message = NULL,
           error_category = NULL,
           updated_at = now()
     WHERE id = p_chunk_id AND status = 'processing'
       AND worker_id = p_worker_id AND attempts = p_attempt
    RETURNING * INTO v_chunk;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_exhausted THEN
        UPDATE chunked_sync_jobs
           SET status = 'completed', completed_at = now(), updated_at = now(),
               checkpoint_data = checkpoint_data
                   || jsonb_build_object('skipped', 'mailbox exhausted by chunk '
                                                     || v_chunk.chunk_index)
         WHERE parent_sync_job_id = v_chunk.parent_sync_job_id
           AND chunk_index > v_chunk.chunk_index
           AND status IN ('pending', 'retrying');
    END IF;
    RETURN true;
END;
$$;

-- Record a failed attempt: back to the queue after p_retry_delay_s, or failed for good.
-- Returns the new status, or NULL when the caller no longer held the chunk.
CREATE FUNCTION fail_chunk_job(
    p_chunk_id uuid, p_worker_id text, p_attempt integer,
    p_error_message text, p_error_category text, p_retryable boolean,
    p_retry_delay_s double precision, p_api_calls integer, p_processing_time_ms integer)
RETURNS text
LANGUAGE sql AS $$
    UPDATE chunked_sync_jobs
       SET status = CASE WHEN p_retryable AND attempts < max_attempts
                         THEN 'retrying' ELSE 'failed' END,
           next_attempt_at = CASE WHEN p_retryable AND attempts < max_attempts
                                  THEN now() + make_interval(secs => p_retry_delay_s) END,
           completed_at = CASE WHEN p_retryable AND attempts < max_attempts
                               THEN NULL ELSE now() END,
           error_message = left(p_error_message, 2000),
           error_category = p_error_category,
           api_calls_made = api_calls_made + p_api_calls,
           processing_time_ms = processing_time_ms + p_processing_time_ms,
           worker_id = NULL,
           heartbeat_at = NULL,
           updated_at = now()
     WHERE id = p_chunk_id AND status = 'processing'
       AND worker_id = p_worker_id AND attempts = p_attempt
    RETURNING status;
$$;

-- Put back the chunks whose worker stopped renewing its lease; fail those out of attempts.
-- The cleanup flow runs it for every job; a resumed sync runs it for its own job only.
CREATE FUNCTION cleanup_stuck_chunks(p_stuck_after interval, p_job_id uuid DEFAULT NULL)
RETURNS TABLE (chunk_id uuid, parent_sync_job_id uuid, new_status text)
LANGUAGE sql AS $$
    WITH stuck AS (
        SELECT id
          FROM chunked_sync_jobs
         WHERE status = 'processing' AND heartbeat_at < now() - p_stuck_after
           AND (p_job_id IS NULL OR parent_sync_job_id = p_job_id)
           FOR UPDATE SKIP LOCKED)
    UPDATE chunked_sync_jobs AS c
       SET status = CASE WHEN c.attempts >= c.max_attempts THEN 'failed' ELSE 'pending' END,
           completed_at = CASE WHEN c.attempts >= c.max_attempts THEN now() END,
           error_category = 'stuck',
           error_message = format('worker %s stopped renewing its lease (last heartbeat %s)',
                                  c.worker_id, c.heartbeat_at),
           worker_id = NULL,
           heartbeat_at = NULL,
           updated_at = now()
      FROM stuck
     WHERE c.id = stuck.id
    RETURNING c.id, c.parent_sync_job_id, c.status;
$$;

-- Close a job once every chunk has finished: totals from its chunks, completed only when no
-- chunk failed. Returns the job's status (unchanged while chunks are still open).
CREATE FUNCTION finish_sync_job(p_job_id uuid)
RETURNS text
LANGUAGE sql AS $$
    WITH totals AS (
        SELECT count(*) FILTER (WHERE status NOT IN ('completed', 'failed')) AS open_chunks,
               count(*) FILTER (WHERE status = 'failed') AS failed_chunks,
               coalesce(sum(emails_processed), 0) AS processed,
               coalesce(sum(emails_failed), 0) AS failed,
               coalesce(sum(api_calls_made), 0) AS api_calls,
               (array_agg(error_message ORDER BY chunk_index)
                   FILTER (WHERE status = 'failed'))[1] AS first_error,
               (array_agg(error_category ORDER BY chunk_index)
                   FILTER (WHERE status = 'failed'))[1] AS first_category
          FROM chunked_sync_jobs
         WHERE parent_sync_job_id = p_job_id),
    closed AS (
        UPDATE sync_queue AS q
           SET status = CASE WHEN t.failed_chunks = 0 THEN 'completed' ELSE 'partial_failure' END,
               emails_processed = t.processed,
               emails_failed = t.failed,
               api_calls_made = q.api_calls_made + t.api_calls,
               error_message = t.first_error,
               error_category = t.first_category,
               completed_at = now(),
               updated_at = now()
          FROM totals AS t
         WHERE q.id = p_job_id AND t.open_chunks = 0 AND q.status IN ('pending', 'running')
        RETURNING q.status)
    SELECT coalesce((SELECT status FROM closed),
                    (SELECT status FROM sync_queue WHERE id = p_job_id));
$$;

-- Live progress of every job, from SQL (the old system's monitoring view, one chunk table).
CREATE VIEW chunk_processing_status AS
SELECT q.id AS parent_sync_job_id,
       q.business_id,
       q.store_id,
       q.status AS job_status,
       count(c.id) AS total_chunks,
       count(c.id) FILTER (WHERE c.status = 'pending') AS pending_chunks,
       count(c.id) FILTER (WHERE c.status = 'processing') AS processing_chunks,
       count(c.id) FILTER (WHERE c.status = 'retrying') AS retrying_chunks,
       count(c.id) FILTER (WHERE c.status = 'completed') AS completed_chunks,
       count(c.id) FILTER (WHERE c.status = 'failed') AS failed_chunks,
       coalesce(sum(c.emails_processed), 0) AS emails_processed,
       coalesce(sum(c.emails_failed), 0) AS emails_failed,
       coalesce(sum(c.api_calls_made), 0) AS api_calls_made,
       CASE
           WHEN count(c.id) = 0 THEN q.status
           WHEN count(c.id) FILTER (WHERE c.status IN ('completed', 'failed')) < count(c.id)
               THEN CASE WHEN count(c.id) FILTER (WHERE c.status <> 'pending') = 0
                         THEN 'pending' ELSE 'processing' END
           WHEN count(c.id) FILTER (WHERE c.status = 'failed') > 0 THEN 'partial_failure'
           ELSE 'completed'
       END AS overall_status,
       CASE WHEN count(c.id) = 0 THEN 0
            ELSE round(100.0 * count(c.id) FILTER (WHERE c.status IN ('completed', 'failed'))
                       / count(c.id), 1)
       END AS progress_percentage
  FROM sync_queue AS q
  LEFT JOIN chunked_sync_jobs AS c ON c.parent_sync_job_id = q.id
 GROUP BY q.id;

CREATE FUNCTION get_sync_job_progress(p_job_id uuid)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT to_jsonb(s) FROM chunk_processing_status AS s WHERE s.parent_sync_job_id = p_job_id;
$$;
