-- Named queries. Each block: "-- name: x", a description, one statement, %(named)s params.

-- name: upsert_store
-- The store for (business, mailbox, folder), created on first use.
INSERT INTO stores (business_id, name, mailbox, folder)
VALUES (%(business_id)s, %(name)s, %(mailbox)s, %(folder)s)
ON CONFLICT (business_id, mailbox, folder) DO UPDATE SET name = stores.name
RETURNING *;

-- name: get_store
-- One store by id.
SELECT * FROM stores WHERE id = %(store_id)s;

-- name: create_sync_job
-- A new parent job; the partial unique index refuses a second active job for the store.
INSERT INTO sync_queue (business_id, store_id, sync_type, status, sync_from, sync_to,
                        chunk_size, page_size, metadata)
VALUES (%(business_id)s, %(store_id)s, %(sync_type)s, 'pending', %(sync_from)s, %(sync_to)s,
        %(chunk_size)s, %(page_size)s, %(metadata)s)
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
-- Record the plan and create its chunks in one statement; a job is planned only once.
WITH planned AS (
    UPDATE sync_queue
       SET estimated_emails = %(estimated_emails)s, total_chunks = %(total_chunks)s,
           api_calls_made = api_calls_made + %(api_calls)s, updated_at = now()
     WHERE id = %(job_id)s AND total_chunks IS NULL
    RETURNING id, business_id, store_id, chunk_size)
INSERT INTO chunked_sync_jobs (parent_sync_job_id, business_id, store_id, chunk_index,
                               total_chunks, chunk_size, estimated_emails, max_attempts)
SELECT p.id, p.business_id, p.store_id, i, %(total_chunks)s, p.chunk_size,
       CASE WHEN i < %(total_chunks)s THEN p.chunk_size
            ELSE greatest(%(estimated_emails)s - p.chunk_size * (i - 1), 0) END,
       %(max_attempts)s
  FROM planned AS p, generate_series(1, %(total_chunks)s) AS i;

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

-- name: get_chunk_by_index
-- One chunk of a job.
SELECT * FROM chunked_sync_jobs
 WHERE parent_sync_job_id = %(job_id)s AND chunk_index = %(chunk_index)s;

-- name: claim_next_chunk_job
-- Claim the job's next chunk in order, if one is claimable now.
SELECT * FROM claim_next_chunk_job(%(job_id)s, %(worker_id)s);

-- name: heartbeat_chunk
-- Renew the lease; false when the claim is gone.
SELECT heartbeat_chunk(%(chunk_id)s, %(worker_id)s, %(attempt)s) AS alive;

-- name: record_chunk_progress
-- Fence and record progress inside the page's transaction: no row means the claim is gone
-- and the transaction must roll back. Taking the row lock first also orders us before any
-- recovery that wants the same chunk.
UPDATE chunked_sync_jobs
   SET checkpoint_data = %(checkpoint_data)s, emails_processed = %(emails_processed)s,
       emails_failed = %(emails_failed)s, heartbeat_at = now(), updated_at = now()
 WHERE id = %(chunk_id)s AND status = 'processing'
   AND worker_id = %(worker_id)s AND attempts = %(attempt)s
RETURNING id;

-- name: insert_checkpoint
-- Append the job's new position (written in the same transaction as the page's rows).
INSERT INTO sync_state_checkpoints (business_id, store_id, sync_job_id, chunk_id, chunk_index,
                                    cursor, emails_processed, exhausted)
VALUES (%(business_id)s, %(store_id)s, %(job_id)s, %(chunk_id)s, %(chunk_index)s,
        %(cursor)s, %(emails_processed)s, %(exhausted)s);

-- name: latest_checkpoint
-- Where the job continues: its newest checkpoint.
SELECT * FROM sync_state_checkpoints
 WHERE sync_job_id = %(job_id)s ORDER BY id DESC LIMIT 1;

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

-- name: recover_stuck_chunks_of_job
-- Put back (or fail) this job's chunks whose lease expired (a resumed sync does this).
SELECT * FROM cleanup_stuck_chunks(make_interval(secs => %(stuck_after_s)s), %(job_id)s);

-- name: get_sync_job_progress
-- Live progress of one job as JSON.
SELECT get_sync_job_progress(%(job_id)s) AS progress;

-- name: count_store_emails
-- How many messages a store holds.
SELECT count(*) AS n FROM emails WHERE store_id = %(store_id)s;

-- name: create_email_staging
-- Per-connection staging table for a binary COPY; emptied at every commit. Recipients are
-- JSON text here (cast once, in the upsert); toast_tuple_target keeps a typical message
-- inline and uncompressed, so its body is compressed once, in emails, not twice.
CREATE TEMP TABLE IF NOT EXISTS email_staging (
    graph_id text, internet_message_id text, conversation_id text, subject text,
    sender_name text, sender_address text, from_address text, to_recipients text,
    cc_recipients text, received_at timestamptz, sent_at timestamptz, body_content_type text,
    body text, body_preview text, has_attachments boolean, is_read boolean, importance text,
    parent_folder_id text, content_hash text
) WITH (toast_tuple_target = 8160) ON COMMIT DELETE ROWS;

-- name: upsert_staged_emails
-- Move the staged page into emails: new rows inserted, changed rows updated, identical rows
-- left alone. Returns one row: how many rows were written, and how many of them inserted.
WITH written AS (
    INSERT INTO emails (business_id, store_id, graph_id, internet_message_id, conversation_id,
                        subject, sender_name, sender_address, from_address, to_recipients,
                        cc_recipients, received_at, sent_at, body_content_type, body, body_preview,
                        has_attachments, is_read, importance, parent_folder_id, content_hash,
                        sync_job_id)
    SELECT DISTINCT ON (graph_id)
           %(business_id)s, %(store_id)s, graph_id, internet_message_id, conversation_id,
           subject, sender_name, sender_address, from_address, to_recipients::jsonb,
           cc_recipients::jsonb, received_at, sent_at, body_content_type, body, body_preview,
           has_attachments, is_read, importance, parent_folder_id, content_hash, %(job_id)s
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
           content_hash = excluded.content_hash, sync_job_id = excluded.sync_job_id,
           last_synced_at = now()
     WHERE emails.content_hash IS DISTINCT FROM excluded.content_hash
    RETURNING (xmax = 0) AS inserted)
SELECT count(*) AS written, count(*) FILTER (WHERE inserted) AS inserted FROM written;

-- name: upsert_attachments
-- A page's attachment metadata in one statement (a JSON array of objects, one per
-- attachment); replays change nothing. DISTINCT ON: a message sent twice in one page must
-- not update a row twice.
INSERT INTO email_attachments (business_id, store_id, email_graph_id, graph_attachment_id,
                               name, content_type, size_bytes, is_inline)
SELECT DISTINCT ON (a.email_graph_id, a.graph_attachment_id)
       %(business_id)s, %(store_id)s, a.email_graph_id, a.graph_attachment_id, a.name,
       a.content_type, a.size_bytes, a.is_inline
  FROM jsonb_to_recordset(%(attachments)s)
       AS a (email_graph_id text, graph_attachment_id text, name text, content_type text,
             size_bytes bigint, is_inline boolean)
ON CONFLICT (store_id, email_graph_id, graph_attachment_id) DO UPDATE
   SET name = excluded.name, content_type = excluded.content_type,
       size_bytes = excluded.size_bytes, is_inline = excluded.is_inline
 WHERE (email_attachments.name, email_attachments.content_type, email_attachments.size_bytes,
        email_attachments.is_inline)
       IS DISTINCT FROM (excluded.name, excluded.content_type, excluded.size_bytes,
                         excluded.is_inline);

-- name: seconds_until_due
-- How long a retrying chunk must still wait (Retry-After or backoff).
SELECT greatest(0, extract(epoch FROM next_attempt_at - now()))::float8 AS seconds
  FROM chunked_sync_jobs WHERE id = %(chunk_id)s;
