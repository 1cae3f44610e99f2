-- Named queries of the cleanup flow (stuck-chunk recovery and retention). All of them run
-- in Database.maintenance_transaction(), as mailsync_maintenance: they must see every
-- tenant's rows. Each delete is one bounded batch (%(batch_size)s rows); the caller loops,
-- one transaction a batch.

-- name: try_cleanup_lock
-- Take the session-level cleanup lock if it is free; false at once when another holds it.
SELECT pg_try_advisory_lock(%(lock_key)s) AS acquired;

-- name: release_cleanup_lock
-- Give the cleanup lock back (closing the connection would too).
SELECT pg_advisory_unlock(%(lock_key)s) AS released;

-- name: cleanup_stuck_chunks
-- Chunks whose heartbeat is older than the threshold: back to pending (the attempt stays
-- counted) or failed with category 'stuck' when their attempts are spent.
SELECT * FROM cleanup_stuck_chunks(make_interval(secs => %(stuck_after_s)s));

-- name: close_finished_jobs
-- Jobs still open although every chunk has finished (their flow died before closing them):
-- closed now by finish_sync_job, which returns completed or partial_failure.
SELECT q.id AS job_id, finish_sync_job(q.id) AS status
  FROM sync_queue AS q
 WHERE q.status IN ('pending', 'running')
   AND q.total_chunks IS NOT NULL
   AND EXISTS (SELECT 1 FROM chunked_sync_jobs AS c WHERE c.parent_sync_job_id = q.id)
   AND NOT EXISTS (
         SELECT 1 FROM chunked_sync_jobs AS c
          WHERE c.parent_sync_job_id = q.id AND c.status NOT IN ('completed', 'failed'));

-- name: jobs_to_resume
-- Open jobs that nobody is working on: no chunk processing, chunks left to run (or no plan
-- yet), and either a chunk of theirs was just put back by recovery (%(recovered_job_ids)s,
-- a JSON array of ids) or there has been no sign of life for %(idle_after_s)s: the newest
-- of the job's and its chunks' updates and of a retrying chunk's next_attempt_at. A resume
-- requested earlier is not requested again while its run has not started (the job not
-- updated since) and is younger than %(resume_grace_s)s: it may still wait for a worker.
WITH activity AS (
    SELECT q.id, q.business_id, q.store_id, q.updated_at, q.total_chunks,
           (q.metadata ->> 'resume_requested_at')::timestamptz AS resume_requested_at,
           count(c.id) FILTER (WHERE c.status = 'processing') AS processing_chunks,
           count(c.id) FILTER (WHERE c.status IN ('pending', 'retrying')) AS open_chunks,
           greatest(q.updated_at, max(c.updated_at), max(c.next_attempt_at)) AS last_activity_at
      FROM sync_queue AS q
      LEFT JOIN chunked_sync_jobs AS c ON c.parent_sync_job_id = q.id
     WHERE q.status IN ('pending', 'running')
     GROUP BY q.id)
SELECT id AS job_id, business_id, store_id, open_chunks, last_activity_at
  FROM activity
 WHERE processing_chunks = 0
   AND (total_chunks IS NULL OR open_chunks > 0)
   AND (id IN (SELECT jsonb_array_elements_text(%(recovered_job_ids)s::jsonb)::uuid)
        OR (last_activity_at < now() - make_interval(secs => %(idle_after_s)s)
            AND (resume_requested_at IS NULL
                 OR updated_at > resume_requested_at
                 OR resume_requested_at < now() - make_interval(secs => %(resume_grace_s)s))))
 ORDER BY last_activity_at;

-- name: mark_resume_requested
-- Note on the job that a cleanup asked for its resumption (seen by jobs_to_resume). Leaves
-- updated_at alone: that is how the next cleanup tells whether the resumed run started.
UPDATE sync_queue
   SET metadata = metadata || jsonb_build_object(
           'resume_requested_at', now(), 'resume_requested_by', %(requested_by)s::text)
 WHERE id = %(job_id)s AND status IN ('pending', 'running');

-- name: delete_finished_checkpoints
-- One batch of checkpoints of jobs finished more than %(grace_s)s ago: a finished job never
-- resumes, so its positions only help someone looking into it shortly after.
WITH doomed AS (
    SELECT cp.id
      FROM sync_state_checkpoints AS cp
      JOIN sync_queue AS q ON q.id = cp.sync_job_id
     WHERE q.status IN ('completed', 'partial_failure', 'failed')
       AND q.completed_at < now() - make_interval(secs => %(grace_s)s)
     LIMIT %(batch_size)s),
deleted AS (
    DELETE FROM sync_state_checkpoints AS cp USING doomed
     WHERE cp.id = doomed.id
    RETURNING 1)
SELECT count(*) AS deleted FROM deleted;

-- name: delete_expired_chunks
-- One batch of chunks of expired jobs (expired_sync_jobs), before the jobs themselves, so
-- that no single statement cascades into an unbounded number of rows. Also counts the
-- checkpoints that go with them (normally none left: they expire sooner).
WITH doomed AS (
    SELECT c.id
      FROM chunked_sync_jobs AS c
     WHERE c.parent_sync_job_id IN (
             SELECT e.id FROM expired_sync_jobs(make_interval(secs => %(completed_after_s)s),
                                                make_interval(secs => %(failed_after_s)s)) AS e)
     LIMIT %(batch_size)s),
cascaded AS (
    SELECT count(*) AS checkpoints
      FROM sync_state_checkpoints AS cp
     WHERE cp.chunk_id IN (SELECT id FROM doomed)),
deleted AS (
    DELETE FROM chunked_sync_jobs AS c USING doomed
     WHERE c.id = doomed.id
    RETURNING 1)
SELECT (SELECT count(*) FROM deleted) AS deleted, (SELECT checkpoints FROM cascaded) AS checkpoints;

-- name: delete_expired_jobs
-- One batch of expired jobs; whatever chunks or checkpoints are still theirs go with them
-- by cascade, and are counted. Stores and emails are never touched.
WITH doomed AS (
    SELECT e.id
      FROM expired_sync_jobs(make_interval(secs => %(completed_after_s)s),
                             make_interval(secs => %(failed_after_s)s)) AS e
     LIMIT %(batch_size)s),
cascaded AS (
    SELECT (SELECT count(*) FROM chunked_sync_jobs
             WHERE parent_sync_job_id IN (SELECT id FROM doomed)) AS chunks,
           (SELECT count(*) FROM sync_state_checkpoints
             WHERE sync_job_id IN (SELECT id FROM doomed)) AS checkpoints),
deleted AS (
    DELETE FROM sync_queue AS q USING doomed
     WHERE q.id = doomed.id
    RETURNING 1)
SELECT (SELECT count(*) FROM deleted) AS deleted, cascaded.chunks, cascaded.checkpoints
  FROM cascaded;

-- name: delete_orphan_attachments
-- One batch of attachment rows older than %(older_than_s)s whose message is gone from
-- emails. Walks the table by id from %(after_id)s (keyset): each batch scans at most
-- batch_size rows, instead of re-scanning the live attachments before the orphans every
-- time. last_id is NULL when the walk is done.
WITH scanned AS (
    SELECT a.id, a.store_id, a.email_graph_id
      FROM email_attachments AS a
     WHERE a.id > %(after_id)s
       AND a.created_at < now() - make_interval(secs => %(older_than_s)s)
     ORDER BY a.id
     LIMIT %(batch_size)s),
deleted AS (
    DELETE FROM email_attachments AS a USING scanned
     WHERE a.id = scanned.id
       AND NOT EXISTS (SELECT 1 FROM emails AS e
                        WHERE e.store_id = scanned.store_id
                          AND e.graph_id = scanned.email_graph_id)
    RETURNING 1)
SELECT (SELECT max(id) FROM scanned) AS last_id, (SELECT count(*) FROM deleted) AS deleted;

-- name: delete_orphan_blobs
-- One batch of attachment contents no attachment references any more, untouched for
-- %(older_than_s)s. Safe against a sync storing the same content at the same moment: the
-- sync first touches the blob (touch_attachment_blob: last_referenced_at = now(), under its
-- row lock) or inserts it, and only then writes its reference, in one transaction. So
-- - the sync touched it first: its lock makes SKIP LOCKED pass the blob by, or, committed,
--   FOR UPDATE re-reads the row and finds last_referenced_at inside the grace: kept;
-- - we locked it first: the sync's touch waits, finds no row once we commit, and stores
--   the content anew (insert_uploaded_blob), so its reference never points at a deleted blob;
-- - and the foreign key from email_attachments refuses a delete that would break a
--   committed reference, whatever happened.
WITH doomed AS (
    SELECT b.business_id, b.sha256
      FROM attachment_blobs AS b
     WHERE b.last_referenced_at < now() - make_interval(secs => %(older_than_s)s)
       AND NOT EXISTS (SELECT 1 FROM email_attachments AS a
                        WHERE a.business_id = b.business_id AND a.sha256 = b.sha256)
     LIMIT %(batch_size)s
       FOR UPDATE SKIP LOCKED),
deleted AS (
    DELETE FROM attachment_blobs AS b USING doomed
     WHERE b.business_id = doomed.business_id AND b.sha256 = doomed.sha256
    RETURNING 1)
SELECT count(*) AS deleted FROM deleted;
