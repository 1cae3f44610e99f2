-- Whole mailboxes, kept current (issue 9).
--
-- * A store is a mailbox: one row per (business, mailbox), whatever folders it syncs; a
--   message is one row per mailbox (emails unique on store_id, graph_id), its folder in
--   parent_folder_id. Stores that were one per folder are merged here.
-- * mail_folders: the mailbox's folder tree as last listed, with each folder's delta link.
-- * A job's chunks are of two kinds: 'full' (the keyset listing of one folder, planned from
--   its count) and 'delta' (one delta round of one folder, checkpointed per page).
-- * emails.deleted_at: NULL while the message is in the mailbox. Removal is decided at the
--   end of a job, from email_removals: a folder's @removed means "not in this folder" only.

-- 1. One store per mailbox --------------------------------------------------------------
CREATE TEMP TABLE store_merge ON COMMIT DROP AS
SELECT id AS old_id,
       first_value(id) OVER (PARTITION BY business_id, mailbox ORDER BY created_at, id) AS keep_id
  FROM stores;
DELETE FROM store_merge WHERE old_id = keep_id;

-- One active job per store survives: the merged stores' active jobs end (they can be
-- started again, and then cover the whole mailbox).
UPDATE sync_queue
   SET status = 'failed', error_category = 'superseded', completed_at = now(),
       error_message = 'its store was merged into the mailbox''s store (migration 0006)'
 WHERE store_id IN (SELECT old_id FROM store_merge) AND status IN ('pending', 'running');

DELETE FROM emails AS e
 USING store_merge AS m
 WHERE e.store_id = m.old_id
   AND EXISTS (SELECT 1 FROM emails AS k WHERE k.store_id = m.keep_id AND k.graph_id = e.graph_id);
DELETE FROM email_attachments AS a
 USING store_merge AS m
 WHERE a.store_id = m.old_id
   AND EXISTS (SELECT 1 FROM email_attachments AS k
                WHERE k.store_id = m.keep_id AND k.email_graph_id = a.email_graph_id
                  AND k.graph_attachment_id = a.graph_attachment_id);
UPDATE emails AS e SET store_id = m.keep_id FROM store_merge AS m WHERE e.store_id = m.old_id;
UPDATE email_attachments AS a SET store_id = m.keep_id
  FROM store_merge AS m WHERE a.store_id = m.old_id;
UPDATE sync_queue AS q SET store_id = m.keep_id FROM store_merge AS m WHERE q.store_id = m.old_id;
UPDATE chunked_sync_jobs AS c SET store_id = m.keep_id
  FROM store_merge AS m WHERE c.store_id = m.old_id;
UPDATE sync_state_checkpoints AS cp SET store_id = m.keep_id
  FROM store_merge AS m WHERE cp.store_id = m.old_id;
DELETE FROM stores WHERE id IN (SELECT old_id FROM store_merge);

ALTER TABLE stores DROP CONSTRAINT stores_business_id_mailbox_folder_key;
ALTER TABLE stores ADD CONSTRAINT stores_business_id_mailbox_key UNIQUE (business_id, mailbox);
ALTER TABLE stores ALTER COLUMN folder SET DEFAULT 'all';
UPDATE stores SET name = mailbox;
COMMENT ON COLUMN stores.folder IS 'the folder selection a sync uses when none is given';

-- 2. The folder tree ----------------------------------------------------------------------
CREATE TABLE mail_folders (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    business_id     uuid        NOT NULL,
    store_id        uuid        NOT NULL,
    graph_id        text        NOT NULL,          -- immutable folder id
    parent_graph_id text,
    display_name    text        NOT NULL,
    path            text        NOT NULL,          -- "Inbox/Projects/2024"
    well_known_name text,                          -- inbox, sentitems, … when known
    is_hidden       boolean     NOT NULL DEFAULT false,
    total_item_count integer,
    delta_link      text,       -- where the next incremental round starts; NULL: full sync next
    synced_at       timestamptz,                   -- its last completed round or listing
    last_seen_at    timestamptz NOT NULL DEFAULT now(),  -- in the mailbox's folder list
    deleted_at      timestamptz,                   -- tombstone: gone from the mailbox
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (store_id, graph_id),
    FOREIGN KEY (store_id, business_id) REFERENCES stores (id, business_id) ON DELETE CASCADE
);

-- 3. Jobs and chunks know folders ---------------------------------------------------------
ALTER TABLE sync_queue
    ADD COLUMN folder text NOT NULL DEFAULT 'all',      -- the job's folder selection
    ADD COLUMN force_full boolean NOT NULL DEFAULT false,
    ADD COLUMN folders integer,
    ADD COLUMN emails_added integer NOT NULL DEFAULT 0,
    ADD COLUMN emails_updated integer NOT NULL DEFAULT 0,
    ADD COLUMN emails_deleted integer NOT NULL DEFAULT 0,
    ADD COLUMN delta_resets integer NOT NULL DEFAULT 0,
    ADD COLUMN delta_fallbacks integer NOT NULL DEFAULT 0;
UPDATE sync_queue AS q SET folder = s.folder FROM stores AS s WHERE s.id = q.store_id;

ALTER TABLE chunked_sync_jobs
    ADD COLUMN kind text NOT NULL DEFAULT 'full' CHECK (kind IN ('full', 'delta')),
    ADD COLUMN folder_id text,                 -- the folder's Graph id (NULL: before 0006)
    ADD COLUMN last_in_folder boolean NOT NULL DEFAULT false,
    ADD COLUMN emails_added integer NOT NULL DEFAULT 0,
    ADD COLUMN emails_updated integer NOT NULL DEFAULT 0,
    ADD COLUMN delta_resets integer NOT NULL DEFAULT 0;
UPDATE chunked_sync_jobs SET last_in_folder = (chunk_index = total_chunks);

ALTER TABLE sync_state_checkpoints ADD COLUMN folder_id text;
DROP INDEX sync_state_checkpoints_job;
CREATE INDEX sync_state_checkpoints_job ON sync_state_checkpoints (sync_job_id, folder_id, id DESC);

-- 4. Deletions ----------------------------------------------------------------------------
ALTER TABLE emails
    ADD COLUMN deleted_at timestamptz,
    ADD COLUMN categories jsonb NOT NULL DEFAULT '[]';
CREATE INDEX emails_store_folder_live ON emails (store_id, parent_folder_id) WHERE deleted_at IS NULL;

-- A job's removal candidates: (folder, message) pairs that are no longer in that folder as
-- far as this job knows (an @removed, or a folder re-listed from scratch that did not show
-- the message). Seeing the message anywhere in the same job withdraws the candidate; at
-- the job's end, a candidate whose message is still filed in that folder marks it deleted.
CREATE TABLE email_removals (
    business_id uuid    NOT NULL,
    store_id    uuid    NOT NULL,
    job_id      uuid    NOT NULL,
    folder_id   text    NOT NULL,
    graph_id    text    NOT NULL,
    applied     boolean NOT NULL DEFAULT false,
    deleted     boolean NOT NULL DEFAULT false,  -- applied, and it marked the message deleted
    PRIMARY KEY (job_id, graph_id, folder_id),
    FOREIGN KEY (job_id, business_id) REFERENCES sync_queue (id, business_id) ON DELETE CASCADE,
    FOREIGN KEY (store_id, business_id) REFERENCES stores (id, business_id) ON DELETE CASCADE
);

-- 5. The state machine learns folders ------------------------------------------------------
-- A chunk that reached the end of its folder completes the later full chunks of the same
-- folder, empty (before 0006: of the job).
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
           AND kind = 'full'
           AND folder_id IS NOT DISTINCT FROM v_chunk.folder_id
           AND status IN ('pending', 'retrying');
    END IF;
    RETURN true;
END;
$$;

-- Mark deleted what the job's removal candidates say is gone: only a message still filed
-- in the folder it was removed from (a move re-filed it elsewhere) and not seen anywhere
-- since (seeing it withdrew the candidate). Returns how many messages it marked deleted.
CREATE FUNCTION apply_email_removals(p_job_id uuid)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_deleted integer;
BEGIN
    WITH marked AS (
        UPDATE emails AS e
           SET deleted_at = now(), last_synced_at = now()
          FROM email_removals AS r
         WHERE r.job_id = p_job_id AND NOT r.applied
           AND e.store_id = r.store_id AND e.graph_id = r.graph_id
           AND e.parent_folder_id = r.folder_id AND e.deleted_at IS NULL
        RETURNING e.graph_id, e.parent_folder_id)
    UPDATE email_removals AS r
       SET deleted = EXISTS (SELECT 1 FROM marked AS m
                              WHERE m.graph_id = r.graph_id AND m.parent_folder_id = r.folder_id)
     WHERE r.job_id = p_job_id AND NOT r.applied;
    UPDATE email_removals SET applied = true WHERE job_id = p_job_id AND NOT applied;
    SELECT count(*) INTO v_deleted FROM email_removals WHERE job_id = p_job_id AND deleted;
    RETURN v_deleted;
END;
$$;

-- Close a job once every chunk has finished (as before), now with the added, updated and
-- deleted counts and the delta resets of its chunks. Removals are applied first.
CREATE OR REPLACE FUNCTION finish_sync_job(p_job_id uuid)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_open integer;
    v_deleted integer;
    v_status text;
BEGIN
    SELECT count(*) INTO v_open FROM chunked_sync_jobs
     WHERE parent_sync_job_id = p_job_id AND status NOT IN ('completed', 'failed');
    IF v_open > 0 THEN
        SELECT status INTO v_status FROM sync_queue WHERE id = p_job_id;
        RETURN v_status;
    END IF;
    PERFORM 1 FROM sync_queue WHERE id = p_job_id AND status IN ('pending', 'running') FOR UPDATE;
    IF NOT FOUND THEN
        SELECT status INTO v_status FROM sync_queue WHERE id = p_job_id;
        RETURN v_status;
    END IF;
    v_deleted := apply_email_removals(p_job_id);
    WITH totals AS (
        SELECT count(*) FILTER (WHERE status = 'failed') AS failed_chunks,
               coalesce(sum(emails_processed), 0) AS processed,
               coalesce(sum(emails_failed), 0) AS failed,
               coalesce(sum(api_calls_made), 0) AS api_calls,
               coalesce(sum(emails_added), 0) AS added,
               coalesce(sum(emails_updated), 0) AS updated,
               coalesce(sum(delta_resets), 0) AS resets,
               count(*) FILTER (WHERE (checkpoint_data ->> 'fallback') IS NOT NULL) AS fallbacks,
               (array_agg(error_message ORDER BY chunk_index)
                   FILTER (WHERE status = 'failed'))[1] AS first_error,
               (array_agg(error_category ORDER BY chunk_index)
                   FILTER (WHERE status = 'failed'))[1] AS first_category
          FROM chunked_sync_jobs
         WHERE parent_sync_job_id = p_job_id)
    UPDATE sync_queue AS q
       SET status = CASE WHEN t.failed_chunks = 0 THEN 'completed' ELSE 'partial_failure' END,
           emails_processed = t.processed,
           emails_failed = t.failed,
           emails_added = t.added,
           emails_updated = t.updated,
           emails_deleted = v_deleted,
           delta_resets = t.resets,
           delta_fallbacks = t.fallbacks,
           api_calls_made = q.api_calls_made + t.api_calls,
           error_message = t.first_error,
           error_category = t.first_category,
           completed_at = now(),
           updated_at = now()
      FROM totals AS t
     WHERE q.id = p_job_id
    RETURNING q.status INTO v_status;
    RETURN v_status;
END;
$$;

-- 6. Ownership, grants, row-level security (as 0004 does for every tenant table) --------
ALTER TABLE mail_folders OWNER TO mailsync_owner;
ALTER TABLE email_removals OWNER TO mailsync_owner;
ALTER FUNCTION apply_email_removals(uuid) OWNER TO mailsync_owner;
ALTER FUNCTION complete_chunk_job(uuid, text, integer, integer, integer, integer, integer,
                                  boolean) OWNER TO mailsync_owner;
ALTER FUNCTION finish_sync_job(uuid) OWNER TO mailsync_owner;
REVOKE ALL ON mail_folders, email_removals FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION apply_email_removals(uuid) FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON mail_folders TO mailsync_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON email_removals TO mailsync_worker;
GRANT EXECUTE ON FUNCTION apply_email_removals(uuid) TO mailsync_worker, mailsync_maintenance;
GRANT SELECT ON mail_folders, email_removals TO mailsync_reporting;
GRANT SELECT, UPDATE, DELETE ON mail_folders, email_removals TO mailsync_maintenance;

ALTER TABLE mail_folders ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON mail_folders
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

ALTER TABLE email_removals ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON email_removals
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());
