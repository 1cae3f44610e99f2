-- Named queries of the mailbox registry (mailsync/sync/registry.py) and of sync-all
-- (flows/sync_all.py). The columns, the backoff and the job-outcome trigger are in
-- migrations/0007_mailbox_registry.sql. Every statement runs as the tenant (row-level
-- security) and names its business too, so that the index on (business_id, …) serves it.

-- name: find_store
-- The business's store of a mailbox, matched without regard to case (a UPN is
-- case-insensitive): registered or not.
SELECT *, registry_health(s) AS health
  FROM stores AS s
 WHERE s.business_id = %(business_id)s AND lower(s.mailbox) = lower(%(mailbox)s);

-- name: register_new_store
-- A new store, registered and due at once.
INSERT INTO stores AS s (business_id, name, mailbox, folder, registered_at, interval_minutes,
                    next_due_at)
VALUES (%(business_id)s, %(mailbox)s, %(mailbox)s, %(folder)s, now(), %(interval_minutes)s,
        now())
RETURNING *, registry_health(s) AS health;

-- name: register_existing_store
-- A store that exists but is not registered (an ad-hoc sync made it, or it was removed)
-- joins the registry, due at once; no row when it is registered already.
UPDATE stores AS s
   SET registered_at = now(), enabled = true, folder = %(folder)s,
       interval_minutes = %(interval_minutes)s, next_due_at = now(), consecutive_failures = 0
 WHERE s.id = %(store_id)s AND s.business_id = %(business_id)s AND s.registered_at IS NULL
RETURNING *, registry_health(s) AS health;

-- name: list_registered_mailboxes
-- The business's registered mailboxes, problem mailboxes first, with their active job and
-- their change-notification subscription's expiry (none: polled only).
SELECT s.*, registry_health(s) AS health, q.id AS active_job_id,
       g.expires_at AS subscription_expires_at
  FROM stores AS s
  LEFT JOIN sync_queue AS q ON q.store_id = s.id AND q.status IN ('pending', 'running')
  LEFT JOIN graph_subscriptions AS g ON g.store_id = s.id AND g.business_id = s.business_id
 WHERE s.business_id = %(business_id)s AND s.registered_at IS NOT NULL
 ORDER BY registry_health(s) IN ('backing_off', 'failing') DESC, s.mailbox;

-- name: unregister_store
-- Out of the registry: sync-all no longer picks it. Its mail, jobs and folders stay.
UPDATE stores AS s
   SET registered_at = NULL, next_due_at = NULL
 WHERE s.id = %(store_id)s AND s.business_id = %(business_id)s AND s.registered_at IS NOT NULL
RETURNING *, registry_health(s) AS health;

-- name: set_store_enabled
-- Pause (false) or resume (true) a registered mailbox. Resuming makes it due at once and
-- forgets its failure streak (and so its backoff): whoever resumes it wants it synced.
UPDATE stores AS s
   SET enabled = %(enabled)s,
       next_due_at = CASE WHEN %(enabled)s THEN now() ELSE s.next_due_at END,
       consecutive_failures = CASE WHEN %(enabled)s THEN 0 ELSE s.consecutive_failures END
 WHERE s.id = %(store_id)s AND s.business_id = %(business_id)s AND s.registered_at IS NOT NULL
RETURNING *, registry_health(s) AS health;

-- name: store_has_active_job
-- Whether a job of the store is pending or running.
SELECT EXISTS (SELECT 1 FROM sync_queue
                WHERE store_id = %(store_id)s AND status IN ('pending', 'running')) AS active;

-- name: purge_store
-- Delete a store with everything that hangs off it (jobs, chunks, checkpoints, mail,
-- attachments, folders: their foreign keys cascade). Maintenance only: the worker role
-- may not delete stores. The business is named, since maintenance sees every tenant.
DELETE FROM stores WHERE id = %(store_id)s AND business_id = %(business_id)s
RETURNING id;

-- name: claim_due_mailboxes
-- Pick up to %(limit)s of the business's registered, enabled mailboxes that are due (their
-- next_due_at has passed) and have no active job, and move each one's next_due_at on by
-- its wait (interval, or backoff) in the same statement. Rows another sync-all is claiming
-- right now are skipped (SKIP LOCKED), and a row claimed since this statement's snapshot
-- is re-checked under its lock and no longer due: two sync-alls never pick one mailbox.
-- due_at (the moment it became due) names this turn of the mailbox. A mailbox with a live
-- change-notification subscription waits at least %(subscribed_interval_minutes)s: its
-- notifications keep it current, the poll is the safety net (migration 0017).
WITH due AS (
    SELECT s.id, s.next_due_at AS due_at
      FROM stores AS s
     WHERE s.business_id = %(business_id)s
       AND s.registered_at IS NOT NULL AND s.enabled
       AND s.next_due_at <= now()
       AND NOT EXISTS (SELECT 1 FROM sync_queue AS q
                        WHERE q.store_id = s.id AND q.status IN ('pending', 'running'))
     ORDER BY s.next_due_at, s.mailbox
     LIMIT %(limit)s
       FOR UPDATE OF s SKIP LOCKED)
UPDATE stores AS s
   SET next_due_at = now() + registry_wait(
           CASE WHEN EXISTS (SELECT 1 FROM graph_subscriptions AS g
                              WHERE g.store_id = s.id AND g.expires_at > now())
                THEN greatest(s.interval_minutes, %(subscribed_interval_minutes)s)
                ELSE s.interval_minutes END,
           s.consecutive_failures),
       last_claimed_at = now()
  FROM due
 WHERE s.id = due.id
RETURNING s.id AS store_id, s.business_id, s.mailbox, s.folder, due.due_at, s.next_due_at,
          s.last_success_at, s.consecutive_failures, registry_health(s) AS health;

-- name: release_mailbox_claim
-- A claimed mailbox whose sync could not be started is due again at its old time.
UPDATE stores
   SET next_due_at = %(due_at)s
 WHERE id = %(store_id)s AND business_id = %(business_id)s AND next_due_at > %(due_at)s;

-- name: registered_mailbox_states
-- sync-all's table: the stores named by %(store_ids)s (a JSON array) as they are now.
SELECT s.id AS store_id, s.mailbox, s.last_status, s.last_job_id, s.last_success_at,
       s.consecutive_failures, s.next_due_at, registry_health(s) AS health
  FROM stores AS s
 WHERE s.business_id = %(business_id)s
   AND s.id IN (SELECT jsonb_array_elements_text(%(store_ids)s::jsonb)::uuid);

-- name: bench_jobs
-- The business's jobs, each with its mailbox and the messages its store holds
-- (mailsync bench --mailboxes).
SELECT s.mailbox, q.status, q.started_at, q.completed_at,
       (SELECT count(*) FROM emails AS e WHERE e.store_id = s.id) AS emails
  FROM sync_queue AS q
  JOIN stores AS s ON s.id = q.store_id
 WHERE q.business_id = %(business_id)s;
