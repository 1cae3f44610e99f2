-- Named queries. Each block: "-- name: x", a description, one statement, %(named)s params.

-- name: upsert_store
-- The mailbox's store, created on first use (one store per mailbox: issue 9).
INSERT INTO stores (business_id, name, mailbox, folder)
VALUES (%(business_id)s, %(mailbox)s, %(mailbox)s, %(folder)s)
ON CONFLICT (business_id, mailbox) DO UPDATE SET name = stores.name
RETURNING *;

-- name: get_store
-- One store by id.
SELECT * FROM stores WHERE id = %(store_id)s;

-- name: create_sync_job
-- A new parent job; the partial unique index refuses a second active job for the store.
INSERT INTO sync_queue (business_id, store_id, sync_type, status, sync_from, sync_to,
                        chunk_size, page_size, folder, force_full, metadata)
VALUES (%(business_id)s, %(store_id)s, %(sync_type)s, 'pending', %(sync_from)s, %(sync_to)s,
        %(chunk_size)s, %(page_size)s, %(folder)s, %(force_full)s, %(metadata)s)
RETURNING *;

-- name: get_active_job_for_store
-- The store's unfinished job, if any.
SELECT * FROM sync_queue WHERE store_id = %(store_id)s AND status IN ('pending', 'running');

-- name: get_sync_job
-- One job by id.
SELECT * FROM sync_queue WHERE id = %(job_id)s;

-- name: start_sync_job
-- Mark a job running (again, when resumed).
UPDATE sync_queue
   SET status = 'running', started_at = coalesce(started_at, now()), updated_at = now()
 WHERE id = %(job_id)s AND status IN ('pending', 'running')
RETURNING *;

-- name: plan_sync_job
-- Record the plan and create its chunks (a JSON array, one object per chunk) in one
-- statement; a job is planned only once. planned: 1 when this call planned it (a job whose
-- every folder was unchanged has no chunk at all), 0 when it was planned already.
WITH planned AS (
    UPDATE sync_queue
       SET estimated_emails = %(estimated_emails)s, total_chunks = %(total_chunks)s,
           folders = %(folders)s, sync_type = %(sync_type)s,
           folders_unchanged = %(folders_unchanged)s,
           api_calls_made = api_calls_made + %(api_calls)s, updated_at = now()
     WHERE id = %(job_id)s AND total_chunks IS NULL
    RETURNING id, business_id, store_id, chunk_size),
chunks AS (
INSERT INTO chunked_sync_jobs (parent_sync_job_id, business_id, store_id, chunk_index,
                               total_chunks, chunk_size, estimated_emails, max_attempts, kind,
                               folder_id, last_in_folder, checkpoint_data)
SELECT p.id, p.business_id, p.store_id, c.chunk_index, %(total_chunks)s, p.chunk_size,
       c.estimated_emails, %(max_attempts)s, c.kind, c.folder_id, c.last_in_folder,
       coalesce(c.checkpoint_data, '{}')
  FROM planned AS p,
       jsonb_to_recordset(%(chunks)s) AS c (chunk_index integer, estimated_emails integer,
                                            kind text, folder_id text, last_in_folder boolean,
                                            checkpoint_data jsonb))
SELECT count(*) AS planned FROM planned;

-- name: fail_sync_job
-- A job that cannot go on at all (unknown mailbox, refused credentials): failed, said why.
UPDATE sync_queue
   SET status = 'failed', error_message = left(%(error_message)s, 2000),
       error_category = %(error_category)s, completed_at = now(), updated_at = now()
 WHERE id = %(job_id)s AND status IN ('pending', 'running')
RETURNING *;

-- name: finish_sync_job
-- Close the job if all its chunks have finished; returns its status either way.
SELECT finish_sync_job(%(job_id)s) AS status;

-- name: list_chunks
-- A job's chunks in order.
SELECT * FROM chunked_sync_jobs WHERE parent_sync_job_id = %(job_id)s ORDER BY chunk_index;

-- name: claim_chunk
-- Claim chunk chunk_index of the job in one statement, or say why not (finished, not_due,
-- busy, blocked) and how long to wait; an expired lease is taken back first (0005).
SELECT r.outcome, r.wait_s, (r.chunk).*
  FROM claim_chunk(%(job_id)s, %(chunk_index)s, %(worker_id)s,
                   make_interval(secs => %(stuck_after_s)s)) AS r;

-- name: heartbeat_chunk
-- Renew the lease; false when the claim is gone.
SELECT heartbeat_chunk(%(chunk_id)s, %(worker_id)s, %(attempt)s) AS alive;

-- name: record_chunk_page
-- Fence and record progress inside the page's transaction: raises (SQLSTATE MSL01) when
-- the claim is gone, which rolls the whole transaction back, queued statements included.
-- Taking the row lock also orders us before any recovery that wants the same chunk.
SELECT record_chunk_page(%(chunk_id)s, %(worker_id)s, %(attempt)s, %(checkpoint_data)s,
                         %(emails_processed)s, %(emails_failed)s, %(emails_added)s,
                         %(emails_updated)s, %(delta_resets)s);

-- name: insert_checkpoint
-- Append the job's new position in a folder (written in the same transaction as the page).
INSERT INTO sync_state_checkpoints (business_id, store_id, sync_job_id, chunk_id, chunk_index,
                                    folder_id, cursor, emails_processed, exhausted)
VALUES (%(business_id)s, %(store_id)s, %(job_id)s, %(chunk_id)s, %(chunk_index)s,
        %(folder_id)s, %(cursor)s, %(emails_processed)s, %(exhausted)s);

-- name: complete_chunk_job
-- Fenced completion with the attempt's metrics.
SELECT complete_chunk_job(%(chunk_id)s, %(worker_id)s, %(attempt)s, %(emails_processed)s,
                          %(emails_failed)s, %(api_calls)s, %(processing_time_ms)s,
                          %(exhausted)s) AS completed;

-- name: fail_chunk_job
-- Fenced failure: retrying (after the delay) or failed; NULL when the claim was gone.
SELECT fail_chunk_job(%(chunk_id)s, %(worker_id)s, %(attempt)s, %(error_message)s,
                      %(error_category)s, %(retryable)s, %(retry_delay_s)s, %(api_calls)s,
                      %(processing_time_ms)s) AS status;

-- name: get_sync_job_progress
-- Live progress of one job as JSON.
SELECT get_sync_job_progress(%(job_id)s) AS progress;

-- name: count_store_emails
-- How many messages a store holds that are still in the mailbox.
SELECT count(*) AS n FROM emails WHERE store_id = %(store_id)s AND deleted_at IS NULL;

-- name: create_email_staging
-- Per-connection staging table for a binary COPY; emptied at every commit. Recipients and
-- categories are JSON text here (cast once, in the upsert); toast_tuple_target keeps a
-- typical message inline and uncompressed, so its body is compressed once, in emails.
CREATE TEMP TABLE IF NOT EXISTS email_staging (
    graph_id text, internet_message_id text, conversation_id text, subject text,
    sender_name text, sender_address text, from_address text, to_recipients text,
    cc_recipients text, received_at timestamptz, sent_at timestamptz, body_content_type text,
    body text, body_preview text, has_attachments boolean, is_read boolean, importance text,
    parent_folder_id text, categories text, content_hash text
) WITH (toast_tuple_target = 8160) ON COMMIT DELETE ROWS;

-- name: upsert_staged_emails
-- Move the staged page into emails: new rows inserted, changed rows updated, identical rows
-- left alone; a message seen again is in the mailbox (deleted_at cleared) and withdraws
-- the job's removal candidates for it. Returns how many rows were written and inserted.
WITH written AS (
    INSERT INTO emails (business_id, store_id, graph_id, internet_message_id, conversation_id,
                        subject, sender_name, sender_address, from_address, to_recipients,
                        cc_recipients, received_at, sent_at, body_content_type, body, body_preview,
                        has_attachments, is_read, importance, parent_folder_id, categories,
                        content_hash, sync_job_id)
    SELECT DISTINCT ON (graph_id)
           %(business_id)s, %(store_id)s, graph_id, internet_message_id, conversation_id,
           subject, sender_name, sender_address, from_address, to_recipients::jsonb,
           cc_recipients::jsonb, received_at, sent_at, body_content_type, body, body_preview,
           has_attachments, is_read, importance, parent_folder_id, categories::jsonb,
           content_hash, %(job_id)s
      FROM email_staging
     ORDER BY graph_id
    ON CONFLICT (store_id, graph_id) DO UPDATE
       SET internet_message_id = excluded.internet_message_id,
           conversation_id = excluded.conversation_id, subject = excluded.subject,
           sender_name = excluded.sender_name, sender_address = excluded.sender_address,
           from_address = excluded.from_address, to_recipients = excluded.to_recipients,
           cc_recipients = excluded.cc_recipients, received_at = excluded.received_at,
           sent_at = excluded.sent_at, body_content_type = excluded.body_content_type,
           body = excluded.body, body_preview = excluded.body_preview,
           has_attachments = excluded.has_attachments, is_read = excluded.is_read,
           importance = excluded.importance, parent_folder_id = excluded.parent_folder_id,
           categories = excluded.categories, content_hash = excluded.content_hash,
           sync_job_id = excluded.sync_job_id, deleted_at = NULL, last_synced_at = now()
     WHERE emails.content_hash IS DISTINCT FROM excluded.content_hash
        OR emails.deleted_at IS NOT NULL
    RETURNING (xmax = 0) AS inserted),
withdrawn AS (
    DELETE FROM email_removals AS r
     USING email_staging AS s
     WHERE r.job_id = %(job_id)s AND r.graph_id = s.graph_id)
SELECT count(*) AS written, count(*) FILTER (WHERE inserted) AS inserted FROM written;

-- name: job_max_attempts
-- The most attempts any chunk of the job may take (fixed in the chunk rows at planning).
SELECT coalesce(max(max_attempts), 1) AS max_attempts
  FROM chunked_sync_jobs WHERE parent_sync_job_id = %(job_id)s;

-- name: upsert_mail_folders
-- The folders just listed (a JSON array), seen now; a folder seen again is no longer a
-- tombstone. Returns every listed folder with its delta link.
INSERT INTO mail_folders (business_id, store_id, graph_id, parent_graph_id, display_name, path,
                          well_known_name, is_hidden, total_item_count, last_seen_at)
SELECT %(business_id)s, %(store_id)s, f.graph_id, f.parent_graph_id, f.display_name, f.path,
       f.well_known_name, f.is_hidden, f.total_item_count, now()
  FROM jsonb_to_recordset(%(folders)s)
       AS f (graph_id text, parent_graph_id text, display_name text, path text,
             well_known_name text, is_hidden boolean, total_item_count integer)
ON CONFLICT (store_id, graph_id) DO UPDATE
   SET parent_graph_id = excluded.parent_graph_id, display_name = excluded.display_name,
       path = excluded.path,
       well_known_name = coalesce(excluded.well_known_name, mail_folders.well_known_name),
       is_hidden = excluded.is_hidden, total_item_count = excluded.total_item_count,
       last_seen_at = now(), deleted_at = NULL
RETURNING *;

-- name: tombstone_missing_folders
-- Folders of the store not in the full listing just taken (%(seen)s: a JSON array of their
-- Graph ids) are gone from the mailbox: tombstoned, their delta state dropped. Returns them.
UPDATE mail_folders
   SET deleted_at = now(), delta_link = NULL
 WHERE store_id = %(store_id)s AND deleted_at IS NULL
   AND graph_id NOT IN (SELECT jsonb_array_elements_text(%(seen)s))
RETURNING *;

-- name: presume_folder_removed
-- A folder listed from scratch (full sync, expired delta state, a tombstoned folder): every
-- message the store still files there, within the window, is a removal candidate until
-- the job sees it again.
INSERT INTO email_removals (business_id, store_id, job_id, folder_id, graph_id)
SELECT e.business_id, e.store_id, %(job_id)s, %(folder_id)s, e.graph_id
  FROM emails AS e
 WHERE e.store_id = %(store_id)s AND e.parent_folder_id = %(folder_id)s
   AND e.deleted_at IS NULL
   AND (%(since)s::timestamptz IS NULL OR e.received_at >= %(since)s::timestamptz)
   AND (%(until)s::timestamptz IS NULL OR e.received_at < %(until)s::timestamptz)
ON CONFLICT DO NOTHING;

-- name: insert_removals
-- A delta page's @removed ids (a JSON array): no longer in this folder (a deletion or a
-- move out).
INSERT INTO email_removals (business_id, store_id, job_id, folder_id, graph_id)
SELECT %(business_id)s, %(store_id)s, %(job_id)s, %(folder_id)s,
       jsonb_array_elements_text(%(graph_ids)s)
ON CONFLICT DO NOTHING;

-- name: set_folder_delta_link
-- The folder's round is complete: where the next incremental round starts.
UPDATE mail_folders SET delta_link = %(delta_link)s, synced_at = now()
 WHERE store_id = %(store_id)s AND graph_id = %(folder_id)s;

-- name: set_folder_delta_links
-- Folders whose round, asked at planning, came back empty (a JSON array of {folder_id,
-- delta_link}): their next round starts at the new link; no chunk is created for them.
UPDATE mail_folders AS f SET delta_link = x.delta_link, synced_at = now()
  FROM jsonb_to_recordset(%(links)s) AS x (folder_id text, delta_link text)
 WHERE f.store_id = %(store_id)s AND f.graph_id = x.folder_id;

-- name: live_folders
-- The store's folders as last listed (not tombstoned), parents before children.
SELECT * FROM mail_folders
 WHERE store_id = %(store_id)s AND deleted_at IS NULL
 ORDER BY created_at, path;

-- name: tombstone_folders
-- Folders Graph's folder delta reported removed (a JSON array of Graph ids), and every
-- folder below them: tombstoned, their delta state dropped. Returns them.
WITH RECURSIVE gone AS (
    SELECT graph_id FROM mail_folders
     WHERE store_id = %(store_id)s AND graph_id IN (SELECT jsonb_array_elements_text(%(ids)s))
    UNION
    SELECT f.graph_id FROM mail_folders AS f JOIN gone AS g ON f.parent_graph_id = g.graph_id
     WHERE f.store_id = %(store_id)s)
UPDATE mail_folders
   SET deleted_at = now(), delta_link = NULL
 WHERE store_id = %(store_id)s AND deleted_at IS NULL
   AND graph_id IN (SELECT graph_id FROM gone)
RETURNING *;

-- name: set_folders_delta_link
-- Where the store's next mailFolders/delta round starts (NULL: read the tree whole).
UPDATE stores SET folders_delta_link = %(delta_link)s WHERE id = %(store_id)s;

-- name: job_folder_stats
-- A job's numbers per folder, in the order the folders ran.
SELECT c.folder_id, coalesce(f.path, c.folder_id) AS path,
       CASE WHEN bool_or(c.kind = 'window' OR c.checkpoint_data->>'mode' = 'initial') THEN 'full'
            ELSE 'incremental' END AS sync_type,
       count(*) FILTER (WHERE c.status = 'failed') AS failed_chunks,
       sum(c.emails_added) AS emails_added, sum(c.emails_updated) AS emails_updated,
       (SELECT count(*) FROM email_removals AS r
         WHERE r.job_id = %(job_id)s AND r.folder_id = c.folder_id AND r.deleted) AS emails_deleted,
       sum(c.delta_resets) AS delta_resets,
       bool_or(c.checkpoint_data ? 'fallback') AS fallback,
       sum(c.api_calls_made) AS api_calls
  FROM chunked_sync_jobs AS c
  LEFT JOIN mail_folders AS f ON f.store_id = c.store_id AND f.graph_id = c.folder_id
 WHERE c.parent_sync_job_id = %(job_id)s
 GROUP BY c.folder_id, f.path
 ORDER BY min(c.chunk_index);

-- name: presume_tombstoned_removed
-- Messages the store files in a folder gone from the mailbox: removal candidates, unless
-- the job sees them elsewhere (a deleted folder's mail may have been moved first).
INSERT INTO email_removals (business_id, store_id, job_id, folder_id, graph_id)
SELECT e.business_id, e.store_id, %(job_id)s, e.parent_folder_id, e.graph_id
  FROM emails AS e
  JOIN mail_folders AS f ON f.store_id = e.store_id AND f.graph_id = e.parent_folder_id
 WHERE e.store_id = %(store_id)s AND e.deleted_at IS NULL AND f.deleted_at IS NOT NULL
ON CONFLICT DO NOTHING;

-- name: release_chunk_job
-- Fenced release of a chunk whose worker was told to stop: pending, attempt not counted.
SELECT release_chunk_job(%(chunk_id)s, %(worker_id)s, %(attempt)s, %(reason)s,
                         %(api_calls)s, %(processing_time_ms)s) AS released;

-- name: latest_checkpoint_of_chunk
-- Where the job continues in the folder of its chunk chunk_index: the newest checkpoint
-- there. Sent after claim_chunk in the claim's transaction (its own snapshot, so a page
-- committed while the claim waited for the chunk's lock is seen).
SELECT cp.* FROM sync_state_checkpoints AS cp
 WHERE cp.sync_job_id = %(job_id)s
   AND cp.folder_id IS NOT DISTINCT FROM (SELECT c.folder_id FROM chunked_sync_jobs AS c
                                          WHERE c.parent_sync_job_id = %(job_id)s
                                            AND c.chunk_index = %(chunk_index)s)
 ORDER BY cp.id DESC LIMIT 1;

-- name: folder_path_of_chunk
-- The path of the chunk's folder as last listed ("Inbox/Projects"), for the run's log; no
-- row for a chunk planned before folders existed (0006).
SELECT f.path FROM mail_folders AS f
  JOIN chunked_sync_jobs AS c ON c.store_id = f.store_id AND c.folder_id = f.graph_id
 WHERE c.parent_sync_job_id = %(job_id)s AND c.chunk_index = %(chunk_index)s;

-- name: get_job_store
-- The store of a job.
SELECT s.* FROM stores AS s
 WHERE s.id = (SELECT j.store_id FROM sync_queue AS j WHERE j.id = %(job_id)s);
