-- Named queries of the chunk report (mailsync/report.py). Each selects the chunks of one
-- window and filter, always the same way:
--   created_at in [since, until): a job's chunks are created together when it is planned,
--   so a job is wholly in a window or wholly out of it;
--   store: a store id or a mailbox (any case); business: a business UUID; NULL = all.
-- Aggregates that SQL does best stay here; percentiles, pivots and ratios are pandas' work.

-- name: report_snapshot
-- Every query of one report reads the same snapshot, so its tables add up to each other.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: report_status_counts
-- Chunk outcomes: count and percent by status (the old system's "success rate by status").
SELECT c.status,
       count(*) AS count,
       round(count(*) * 100.0 / sum(count(*)) OVER (), 2)::float8 AS percent
  FROM chunked_sync_jobs AS c
  JOIN stores AS s ON s.id = c.store_id
 WHERE c.created_at >= %(since)s AND c.created_at < %(until)s
   AND (%(store)s::text IS NULL OR c.store_id::text = lower(%(store)s::text)
        OR lower(s.mailbox) = lower(%(store)s::text))
   AND (%(business)s::uuid IS NULL OR c.business_id = %(business)s::uuid)
 GROUP BY c.status
 ORDER BY array_position(ARRAY['completed', 'failed', 'retrying', 'processing', 'pending'],
                         c.status);

-- name: report_store_health
-- Per store: chunks by outcome, messages synced, the last chunk that completed, and, for a
-- registered mailbox, its health in the registry (migration 0007: backing_off after three
-- failed jobs in a row). Problem stores first: a failed chunk, or a failure streak; a
-- registered mailbox on a streak is listed even when none of its jobs got as far as a
-- chunk in the window (a mailbox Graph does not know fails in planning).
SELECT s.id AS store_id,
       s.business_id,
       s.mailbox,
       s.folder,
       count(c.id) AS chunks,
       count(c.id) FILTER (WHERE c.status = 'completed') AS completed_chunks,
       count(c.id) FILTER (WHERE c.status = 'failed') AS failed_chunks,
       count(c.id) FILTER (WHERE c.status NOT IN ('completed', 'failed')) AS open_chunks,
       coalesce(sum(c.emails_processed), 0) AS emails_synced,
       max(c.completed_at) FILTER (WHERE c.status = 'completed') AS last_sync,
       CASE WHEN s.registered_at IS NOT NULL THEN registry_health(s) END AS health,
       s.consecutive_failures
  FROM stores AS s
  LEFT JOIN chunked_sync_jobs AS c
    ON c.store_id = s.id AND c.created_at >= %(since)s AND c.created_at < %(until)s
 WHERE (%(store)s::text IS NULL OR s.id::text = lower(%(store)s::text)
        OR lower(s.mailbox) = lower(%(store)s::text))
   AND (%(business)s::uuid IS NULL OR s.business_id = %(business)s::uuid)
 GROUP BY s.id
HAVING count(c.id) > 0 OR (s.registered_at IS NOT NULL AND s.consecutive_failures > 0)
 ORDER BY (count(c.id) FILTER (WHERE c.status = 'failed') > 0 OR s.consecutive_failures > 0) DESC,
          count(c.id) FILTER (WHERE c.status = 'failed') DESC, s.consecutive_failures DESC,
          s.mailbox, s.folder;

-- name: report_error_categories
-- Chunks that carry an error, by category: failed for good, or still open (retrying, or
-- put back after a lost lease) with the error of their last attempt; the newest message as
-- a sample. A chunk that completed after a failed attempt no longer carries its error
-- (complete_chunk_job clears it), so it is counted among recovered chunks instead.
SELECT c.error_category,
       count(*) AS chunks,
       count(*) FILTER (WHERE c.status = 'failed') AS failed_chunks,
       count(*) FILTER (WHERE c.status <> 'failed') AS open_chunks,
       (array_agg(c.error_message ORDER BY c.updated_at DESC, c.id))[1] AS sample_message,
       max(c.updated_at) AS last_seen
  FROM chunked_sync_jobs AS c
  JOIN stores AS s ON s.id = c.store_id
 WHERE c.created_at >= %(since)s AND c.created_at < %(until)s
   AND (%(store)s::text IS NULL OR c.store_id::text = lower(%(store)s::text)
        OR lower(s.mailbox) = lower(%(store)s::text))
   AND (%(business)s::uuid IS NULL OR c.business_id = %(business)s::uuid)
   AND c.error_category IS NOT NULL
 GROUP BY c.error_category
 ORDER BY count(*) FILTER (WHERE c.status = 'failed') DESC, count(*) DESC, c.error_category;

-- name: report_job_totals
-- Per job: the work of its chunks in the window (time is the chunks' own processing time,
-- failed attempts included; waits between attempts are not work), newest job first.
SELECT c.parent_sync_job_id AS job_id,
       s.mailbox,
       q.folder,
       q.sync_type,
       q.status AS job_status,
       count(*) AS chunks,
       count(*) FILTER (WHERE c.status = 'failed') AS failed_chunks,
       coalesce(sum(c.emails_processed), 0) AS emails,
       coalesce(sum(c.emails_added), 0) AS emails_added,
       coalesce(sum(c.emails_updated), 0) AS emails_updated,
       max(q.emails_deleted) AS emails_deleted,
       coalesce(sum(c.delta_resets), 0) AS delta_resets,
       coalesce(sum(c.api_calls_made), 0) AS api_calls,
       coalesce(sum(c.processing_time_ms), 0) AS processing_time_ms,
       min(c.started_at) AS started_at,
       max(c.completed_at) AS completed_at
  FROM chunked_sync_jobs AS c
  JOIN stores AS s ON s.id = c.store_id
  JOIN sync_queue AS q ON q.id = c.parent_sync_job_id
 WHERE c.created_at >= %(since)s AND c.created_at < %(until)s
   AND (%(store)s::text IS NULL OR c.store_id::text = lower(%(store)s::text)
        OR lower(s.mailbox) = lower(%(store)s::text))
   AND (%(business)s::uuid IS NULL OR c.business_id = %(business)s::uuid)
 GROUP BY c.parent_sync_job_id, s.mailbox, q.folder, q.sync_type, q.status
 ORDER BY min(c.created_at) DESC, c.parent_sync_job_id;

-- name: report_chunk_rows
-- One row per chunk, for what pandas computes: duration percentiles, attempts, the trend.
SELECT c.status,
       c.attempts,
       c.processing_time_ms,
       c.emails_processed,
       c.api_calls_made,
       c.created_at
  FROM chunked_sync_jobs AS c
  JOIN stores AS s ON s.id = c.store_id
 WHERE c.created_at >= %(since)s AND c.created_at < %(until)s
   AND (%(store)s::text IS NULL OR c.store_id::text = lower(%(store)s::text)
        OR lower(s.mailbox) = lower(%(store)s::text))
   AND (%(business)s::uuid IS NULL OR c.business_id = %(business)s::uuid);

-- name: report_attachments
-- Per store, the attachments a fetch tried in the window (by the trying job's creation),
-- and those still waiting: the attachment failure rate's numbers.
SELECT s.id AS store_id, s.mailbox,
       count(a.id) AS attachments,
       count(a.id) FILTER (WHERE a.sha256 IS NOT NULL AND NOT a.deduplicated) AS stored,
       count(a.id) FILTER (WHERE a.sha256 IS NOT NULL AND a.deduplicated) AS deduplicated,
       count(a.id) FILTER (WHERE a.fetch_error IS NOT NULL) AS unavailable,
       count(a.id) FILTER (WHERE a.fetched_at IS NULL AND a.transient_error IS NOT NULL) AS failed,
       count(a.id) FILTER (WHERE a.fetched_at IS NULL AND a.fetch_error IS NULL) AS pending,
       round(coalesce(sum(a.size_bytes) FILTER (WHERE a.sha256 IS NOT NULL), 0)
             / 1048576.0, 1)::float8 AS mb
  FROM stores AS s
  JOIN email_attachments AS a ON a.store_id = s.id
  JOIN sync_queue AS q ON q.id = a.fetch_job_id
 WHERE q.created_at >= %(since)s AND q.created_at < %(until)s
   AND (%(store)s::text IS NULL OR s.id::text = lower(%(store)s::text)
        OR lower(s.mailbox) = lower(%(store)s::text))
   AND (%(business)s::uuid IS NULL OR s.business_id = %(business)s::uuid)
 GROUP BY s.id
 ORDER BY count(a.id) FILTER (WHERE a.fetch_error IS NOT NULL OR a.transient_error IS NOT NULL)
          DESC, s.mailbox;
