-- A folder's first sync is one delta round cut into chunks (mailsync.rounds), no longer a
-- keyset listing followed by a round. The chunk that ends the round completes the later
-- chunks of the same folder and kind, empty: a round that ended early (mail deleted since
-- the count) leaves nothing for them. (0006 did this for full chunks only; matching the
-- kind keeps a job planned before this migration right: its full listing's end must not
-- skip the folder's delta chunk.)
CREATE OR REPLACE FUNCTION complete_chunk_job(
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
                   || jsonb_build_object('skipped', 'folder exhausted by chunk '
                                                     || v_chunk.chunk_index)
         WHERE parent_sync_job_id = v_chunk.parent_sync_job_id
           AND chunk_index > v_chunk.chunk_index
           AND kind = v_chunk.kind
           AND folder_id IS NOT DISTINCT FROM v_chunk.folder_id
           AND status IN ('pending', 'retrying');
    END IF;
    RETURN true;
END;
$$;
