-- One definition of taking back a chunk whose lease lapsed, for both of its callers.
--
-- claim_chunk (0005) takes back the chunk it is asked for when its worker stopped
-- heartbeating (or is the caller itself, whose earlier attempt ended unrecorded);
-- cleanup_stuck_chunks (0002) takes back every such chunk, for recovery. Each spelled out the
-- same reset: pending again, or failed ('stuck') once its attempts are spent; the holder and
-- its heartbeat cleared; why, in error_message. Now they share take_back_chunk, so the two
-- cannot drift apart. The caller holds the chunk's row lock and has checked the lease.
CREATE FUNCTION take_back_chunk(p_chunk_id uuid)
RETURNS chunked_sync_jobs
LANGUAGE sql AS $$
    UPDATE chunked_sync_jobs AS c
       SET status = CASE WHEN c.attempts >= c.max_attempts THEN 'failed' ELSE 'pending' END,
           completed_at = CASE WHEN c.attempts >= c.max_attempts THEN now() END,
           error_category = 'stuck',
           error_message = format('worker %s stopped renewing its lease (last heartbeat %s)',
                                  c.worker_id, c.heartbeat_at),
           worker_id = NULL,
           heartbeat_at = NULL,
           updated_at = now()
     WHERE c.id = p_chunk_id
    RETURNING c.*;
$$;

ALTER FUNCTION take_back_chunk(uuid) OWNER TO mailsync_owner;
REVOKE EXECUTE ON FUNCTION take_back_chunk(uuid) FROM PUBLIC;
-- As the callers' callers: a worker claims (and resumes its own job's stuck chunks),
-- maintenance recovers every tenant's. SECURITY INVOKER, so row-level security applies.
GRANT EXECUTE ON FUNCTION take_back_chunk(uuid) TO mailsync_worker, mailsync_maintenance;

CREATE OR REPLACE FUNCTION cleanup_stuck_chunks(p_stuck_after interval,
                                                p_job_id uuid DEFAULT NULL)
RETURNS TABLE (chunk_id uuid, parent_sync_job_id uuid, new_status text)
LANGUAGE sql AS $$
    SELECT taken.id, taken.parent_sync_job_id, taken.status
      FROM (SELECT id
              FROM chunked_sync_jobs
             WHERE status = 'processing' AND heartbeat_at < now() - p_stuck_after
               AND (p_job_id IS NULL OR parent_sync_job_id = p_job_id)
               FOR UPDATE SKIP LOCKED) AS stuck
     CROSS JOIN LATERAL take_back_chunk(stuck.id) AS taken;
$$;

-- claim_chunk as in 0005, its step 1 now take_back_chunk.
CREATE OR REPLACE FUNCTION claim_chunk(p_job_id uuid, p_chunk_index integer, p_worker_id text,
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
        v := take_back_chunk(v.id);
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
