-- Claim one chunk by its index, in one statement (the flow runs a job's chunks by index).
--
-- In one transaction, under the chunk's row lock:
--   1. a lease that expired (its worker stopped heartbeating), or one this very worker still
--      holds from an attempt that ended without recording itself (its process is the
--      caller, so that attempt is over), is taken back: pending again, or failed ('stuck')
--      when its attempts are spent;
--   2. the chunk is claimed when it is due (next_attempt_at, which the failed attempt set
--      from Graph's Retry-After or our backoff) and every chunk before it has finished.
-- Otherwise nothing changes and the outcome says why, with how long to wait:
--   claimed   the chunk, now processing for p_worker_id (attempts + 1)
--   finished  completed or failed: nothing to do
--   not_due   retrying; wait_s until next_attempt_at
--   busy      held by another live worker; wait_s until its lease would expire
--   blocked   an earlier chunk has not finished (chunks run in order)
-- No row: the job has no such chunk.
CREATE FUNCTION claim_chunk(p_job_id uuid, p_chunk_index integer, p_worker_id text,
                            p_stuck_after interval)
RETURNS TABLE (outcome text, wait_s double precision, chunk chunked_sync_jobs)
LANGUAGE plpgsql AS $$
DECLARE
    v chunked_sync_jobs;
BEGIN
    SELECT * INTO v
      FROM chunked_sync_jobs AS c
     WHERE c.parent_sync_job_id = p_job_id AND c.chunk_index = p_chunk_index
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF v.status = 'processing'
       AND (v.heartbeat_at < now() - p_stuck_after OR v.worker_id = p_worker_id) THEN
        UPDATE chunked_sync_jobs AS c
           SET status = CASE WHEN c.attempts >= c.max_attempts THEN 'failed' ELSE 'pending' END,
               completed_at = CASE WHEN c.attempts >= c.max_attempts THEN now() END,
               error_category = 'stuck',
               error_message = format('worker %s stopped renewing its lease (last heartbeat %s)',
                                      c.worker_id, c.heartbeat_at),
               worker_id = NULL,
               heartbeat_at = NULL,
               updated_at = now()
         WHERE c.id = v.id
        RETURNING * INTO v;
    END IF;

    IF v.status IN ('completed', 'failed') THEN
        RETURN QUERY SELECT 'finished'::text, 0::float8, v;
    ELSIF v.status = 'processing' THEN
        RETURN QUERY SELECT 'busy'::text,
            greatest(0, extract(epoch FROM v.heartbeat_at + p_stuck_after - now()))::float8, v;
    ELSIF EXISTS (SELECT 1
                    FROM chunked_sync_jobs AS e
                   WHERE e.parent_sync_job_id = p_job_id
                     AND e.chunk_index < p_chunk_index
                     AND e.status NOT IN ('completed', 'failed')) THEN
        RETURN QUERY SELECT 'blocked'::text, 0::float8, v;
    ELSIF v.next_attempt_at > now() THEN
        RETURN QUERY SELECT 'not_due'::text,
            extract(epoch FROM v.next_attempt_at - now())::float8, v;
    ELSE
        UPDATE chunked_sync_jobs AS c
           SET status = 'processing',
               attempts = c.attempts + 1,
               worker_id = p_worker_id,
               heartbeat_at = now(),
               next_attempt_at = NULL,
               started_at = coalesce(c.started_at, now()),
               updated_at = now()
         WHERE c.id = v.id
        RETURNING * INTO v;
        RETURN QUERY SELECT 'claimed'::text, 0::float8, v;
    END IF;
END;
$$;

ALTER FUNCTION claim_chunk(uuid, integer, text, interval) OWNER TO mailsync_owner;
REVOKE EXECUTE ON FUNCTION claim_chunk(uuid, integer, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION claim_chunk(uuid, integer, text, interval) TO mailsync_worker;
