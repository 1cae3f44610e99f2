-- Give a chunk back at once when its worker is told to stop (Ctrl-C, SIGTERM from a worker
-- or a cancelled flow run): pending again, the attempt not counted (it did not fail), its
-- checkpoint kept, so the next claim continues from the last committed page without
-- waiting for the lease to expire. Fenced like every transition out of processing.
CREATE FUNCTION release_chunk_job(p_chunk_id uuid, p_worker_id text, p_attempt integer,
                                  p_reason text, p_api_calls integer,
                                  p_processing_time_ms integer)
RETURNS boolean
LANGUAGE sql AS $$
    WITH released AS (
        UPDATE chunked_sync_jobs
           SET status = 'pending',
               attempts = attempts - 1,
               worker_id = NULL,
               heartbeat_at = NULL,
               next_attempt_at = NULL,
               error_category = 'cancelled',
               error_message = left(p_reason, 2000),
               api_calls_made = api_calls_made + p_api_calls,
               processing_time_ms = processing_time_ms + p_processing_time_ms,
               updated_at = now()
         WHERE id = p_chunk_id AND status = 'processing'
           AND worker_id = p_worker_id AND attempts = p_attempt
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM released);
$$;

ALTER FUNCTION release_chunk_job(uuid, text, integer, text, integer, integer)
    OWNER TO mailsync_owner;
REVOKE EXECUTE ON FUNCTION release_chunk_job(uuid, text, integer, text, integer, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION release_chunk_job(uuid, text, integer, text, integer, integer)
    TO mailsync_worker;
