-- The page's fence raises instead of answering: a page's statements after the COPY travel
-- in one round trip with the commit (mailsync.db, pipelined sessions), so a claim that is
-- gone must fail the transaction itself, before its COMMIT runs, rather than be read back
-- by Python after it. SQLSTATE MSL01 ("mailsync: lease lost") is what mailsync.db turns
-- into LeaseLostError. It records the page's progress as record_chunk_progress did.
CREATE FUNCTION record_chunk_page(p_chunk_id uuid, p_worker_id text, p_attempt integer,
                                  p_checkpoint_data jsonb, p_emails_processed integer,
                                  p_emails_failed integer, p_emails_added integer,
                                  p_emails_updated integer, p_delta_resets integer)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE chunked_sync_jobs
       SET checkpoint_data = p_checkpoint_data, emails_processed = p_emails_processed,
           emails_failed = p_emails_failed, emails_added = p_emails_added,
           emails_updated = p_emails_updated, delta_resets = p_delta_resets,
           heartbeat_at = now(), updated_at = now()
     WHERE id = p_chunk_id AND status = 'processing'
       AND worker_id = p_worker_id AND attempts = p_attempt;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'chunk % is no longer held by worker % in attempt %',
                        p_chunk_id, p_worker_id, p_attempt
              USING ERRCODE = 'MSL01';
    END IF;
END;
$$;

ALTER FUNCTION record_chunk_page(uuid, text, integer, jsonb, integer, integer, integer,
                                 integer, integer) OWNER TO mailsync_owner;
REVOKE EXECUTE ON FUNCTION record_chunk_page(uuid, text, integer, jsonb, integer, integer,
                                             integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_chunk_page(uuid, text, integer, jsonb, integer, integer,
                                            integer, integer, integer) TO mailsync_worker;
