-- Attachment content (issue 22): listing a message's attachments, fetching their bytes into
-- attachment_blobs once per (business, sha256), and the numbers a job reports.

-- name: mark_attachment_listings
-- The page's messages that may have attachments (%(graph_ids)s, a JSON array, chosen by
-- mailsync.sync.ingest: hasAttachments, or an html body that references a cid: part, as
-- inline-only mail reports hasAttachments false), to be listed by fetch-attachments. Once
-- per message: a message changed later is not listed again.
INSERT INTO attachment_listings (business_id, store_id, email_graph_id)
SELECT %(business_id)s::uuid, %(store_id)s::uuid, g.graph_id
  FROM jsonb_array_elements_text(%(graph_ids)s) AS g (graph_id)
ON CONFLICT (store_id, email_graph_id) DO NOTHING;

-- name: commit_lazily
-- This transaction's commit does not wait for its WAL flush (a claim: lost in a crash, its
-- row is only pending again; mailsync.sync.attachments._claim).
SET LOCAL synchronous_commit = off;

-- name: store_attachments_pending
-- Whether fetch-attachments has anything to do for the store: a message marked and not
-- listed yet, and (content mode) an attachment without content not given up on. Both by
-- the partial indexes of the pending rows. Nothing: the sync runs no fetch task at all.
SELECT EXISTS (SELECT 1 FROM attachment_listings
                WHERE store_id = %(store_id)s AND listed_at IS NULL) AS listings,
       EXISTS (SELECT 1 FROM email_attachments
                WHERE store_id = %(store_id)s AND fetched_at IS NULL AND fetch_error IS NULL
                  AND kind <> 'reference') AS contents;

-- name: claim_attachment_listing
-- One message of the store whose attachments are not listed yet and that this run has not
-- tried, taken for this run (run_id) in a short transaction of its own: no connection is
-- held while Graph answers (its requests take Graph slots, which need connections too). A
-- killed run's message keeps that run's id, so the next run (a resumed job) lists it again;
-- SKIP LOCKED: two threads never take the same one.
UPDATE attachment_listings SET run_id = %(run_id)s
 WHERE store_id = %(store_id)s
   AND email_graph_id = (SELECT email_graph_id FROM attachment_listings
                          WHERE store_id = %(store_id)s AND listed_at IS NULL
                            AND run_id IS DISTINCT FROM %(run_id)s
                          ORDER BY created_at, email_graph_id
                          LIMIT 1
                            FOR UPDATE SKIP LOCKED)
RETURNING email_graph_id;

-- name: upsert_listed_attachments
-- A message's attachments as listed (a JSON array of ListedAttachment.as_json). A reference
-- attachment has no content to fetch: it is done once listed (fetched_at set).
INSERT INTO email_attachments (business_id, store_id, email_graph_id, graph_attachment_id,
                               kind, name, content_type, graph_size, is_inline, content_id,
                               fetched_at, fetch_job_id)
SELECT DISTINCT ON (a.graph_attachment_id)
       %(business_id)s, %(store_id)s, %(email_graph_id)s, a.graph_attachment_id, a.kind, a.name,
       a.content_type, a.graph_size, a.is_inline, a.content_id,
       CASE WHEN a.kind = 'reference' THEN now() END, %(job_id)s
  FROM jsonb_to_recordset(%(attachments)s)
       AS a (graph_attachment_id text, kind text, name text, content_type text,
             graph_size bigint, is_inline boolean, content_id text)
ON CONFLICT (store_id, email_graph_id, graph_attachment_id) DO UPDATE
   SET kind = excluded.kind, name = excluded.name, content_type = excluded.content_type,
       graph_size = excluded.graph_size, is_inline = excluded.is_inline,
       content_id = excluded.content_id;

-- name: finish_attachment_listing
-- The message's listing is done (list_error NULL), or can never be (list_error: permanent),
-- or failed for now (transient: listed_at stays NULL, the next run lists it again).
UPDATE attachment_listings
   SET listed_at = CASE WHEN %(done)s THEN now() END, list_error = %(list_error)s,
       job_id = %(job_id)s, run_id = %(run_id)s
 WHERE store_id = %(store_id)s AND email_graph_id = %(email_graph_id)s;

-- name: claim_pending_attachment
-- One file or item attachment of the store without content yet, not given up on, not tried
-- by this run, taken for this run (fetch_run_id) in a short transaction of its own (see
-- claim_attachment_listing): a killed run's attachment is fetched again by the next run,
-- so at most the ones in flight are fetched twice.
UPDATE email_attachments SET fetch_run_id = %(run_id)s
 WHERE id = (SELECT id FROM email_attachments
              WHERE store_id = %(store_id)s AND fetched_at IS NULL AND fetch_error IS NULL
                AND kind <> 'reference' AND fetch_run_id IS DISTINCT FROM %(run_id)s
              ORDER BY id
              LIMIT 1
                FOR UPDATE SKIP LOCKED)
RETURNING id, email_graph_id, graph_attachment_id, kind;

-- name: touch_attachment_blob
-- The content is stored already: say so now (last_referenced_at), under the blob's row
-- lock, so that retention cannot delete it before this transaction's reference commits
-- (sql/cleanup.sql, delete_orphan_blobs). No row: not stored (or being deleted right now).
UPDATE attachment_blobs SET last_referenced_at = now()
 WHERE business_id = %(business_id)s AND sha256 = %(sha256)s
RETURNING size_bytes;

-- name: create_blob_upload
-- Per-connection staging for one blob's binary COPY (mailsync.store.blobs); emptied at commit.
CREATE TEMP TABLE IF NOT EXISTS blob_upload (content bytea) ON COMMIT DELETE ROWS;

-- name: insert_uploaded_blob
-- The staged blob into attachment_blobs. Another worker may have stored the same content
-- meanwhile: then only last_referenced_at moves (inserted false: deduplicated after all).
INSERT INTO attachment_blobs (business_id, sha256, size_bytes, content)
SELECT %(business_id)s, %(sha256)s, %(size_bytes)s, content FROM blob_upload
ON CONFLICT (business_id, sha256) DO UPDATE SET last_referenced_at = now()
RETURNING (xmax = 0) AS inserted;

-- name: record_attachment_content
-- The attachment's content is stored: its hash, its real length, when, by which job.
UPDATE email_attachments
   SET sha256 = %(sha256)s, size_bytes = %(size_bytes)s, fetched_at = now(),
       deduplicated = %(deduplicated)s, fetch_error = NULL, transient_error = NULL,
       fetch_job_id = %(job_id)s, fetch_run_id = %(run_id)s
 WHERE id = %(id)s;

-- name: record_attachment_failure
-- The fetch failed: for good (fetch_error: never asked for again) or for now
-- (transient_error: still pending, the next run tries again).
UPDATE email_attachments
   SET fetch_error = %(fetch_error)s, transient_error = %(transient_error)s,
       fetch_job_id = %(job_id)s, fetch_run_id = %(run_id)s
 WHERE id = %(id)s;

-- name: job_attachment_stats
-- What a job did with attachments, per folder (folder_id NULL: the message is gone).
-- failed: transient failures still pending, attachments and listings.
SELECT e.parent_folder_id AS folder_id,
       count(*) FILTER (WHERE a.sha256 IS NOT NULL AND NOT a.deduplicated) AS stored,
       count(*) FILTER (WHERE a.sha256 IS NOT NULL AND a.deduplicated) AS deduplicated,
       count(*) FILTER (WHERE a.fetch_error IS NOT NULL) AS unavailable,
       count(*) FILTER (WHERE a.transient_error IS NOT NULL AND a.fetched_at IS NULL) AS failed,
       coalesce(sum(a.size_bytes) FILTER (WHERE a.sha256 IS NOT NULL), 0) AS bytes
  FROM email_attachments AS a
  LEFT JOIN emails AS e ON e.store_id = a.store_id AND e.graph_id = a.email_graph_id
 WHERE a.fetch_job_id = %(job_id)s
 GROUP BY e.parent_folder_id
UNION ALL
SELECT e.parent_folder_id, 0, 0, count(*) FILTER (WHERE l.list_error IS NOT NULL),
       count(*) FILTER (WHERE l.listed_at IS NULL), 0
  FROM attachment_listings AS l
  LEFT JOIN emails AS e ON e.store_id = l.store_id AND e.graph_id = l.email_graph_id
 WHERE l.job_id = %(job_id)s AND (l.listed_at IS NULL OR l.list_error IS NOT NULL)
 GROUP BY e.parent_folder_id;

-- name: mark_job_attachments_failed
-- A completed job some of whose attachments failed for now: partial_failure, so that it is
-- seen (the next sync fetches them).
UPDATE sync_queue
   SET status = 'partial_failure', error_category = 'attachments',
       error_message = %(error_message)s
 WHERE id = %(job_id)s AND status = 'completed'
RETURNING status;

-- name: get_attachment_content
-- One attachment (by its Graph id, in the caller's business) and whether its content is
-- stored, for `mailsync attachments get`; the bytes come by attachment_content_part.
SELECT store_id, email_graph_id, graph_attachment_id, kind, name, content_type, size_bytes,
       sha256, content IS NOT NULL AS stored
  FROM attachment_contents
 WHERE graph_attachment_id = %(graph_attachment_id)s
 ORDER BY sha256 IS NULL
 LIMIT 1;

-- name: attachment_content_part
-- %(length)s bytes of a stored content from byte %(start)s (1-based): the column's EXTERNAL
-- storage (migration 0015) lets the server read only the TOAST chunks of that slice.
SELECT substring(content FROM %(start)s FOR %(length)s) AS part
  FROM attachment_blobs
 WHERE business_id = %(business_id)s AND sha256 = %(sha256)s;

-- name: add_job_api_calls
-- Graph requests the job made outside its chunks (listing and fetching attachments),
-- counted in its api_calls_made with the record of what they fetched.
UPDATE sync_queue SET api_calls_made = api_calls_made + %(api_calls)s WHERE id = %(job_id)s;
