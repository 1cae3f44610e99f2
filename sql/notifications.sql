-- Named queries of change notifications (mailsync/notify/): the receiver, the
-- subscriptions and the relay. Tables and the two cross-tenant functions are in
-- migrations/0017_change_notifications.sql. Every statement below, except the two that
-- call those functions and the drop counter (no tenant data), runs as the tenant.

-- name: notification_subscriptions
-- For each subscription id of %(ids)s (a JSON array): its business, store and clientState
-- hash. The receiver's one question across tenants.
SELECT * FROM notification_subscriptions(
    ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)));

-- name: record_notifications
-- One tenant's accepted notifications (%(items)s: a JSON array of {store_id,
-- subscription_id, kind, resource}) into the outbox, with their subscriptions' and stores'
-- newest notification time, in one statement.
WITH items AS (
    SELECT * FROM jsonb_to_recordset(%(items)s::jsonb)
        AS x(store_id uuid, subscription_id text, kind text, resource text)),
inserted AS (
    INSERT INTO notification_outbox (business_id, store_id, subscription_id, kind, resource)
    SELECT %(business_id)s, i.store_id, i.subscription_id, i.kind, i.resource FROM items AS i
    RETURNING id),
subscriptions AS (
    UPDATE graph_subscriptions AS g
       SET last_notification_at = now(), notifications = g.notifications + n.count
      FROM (SELECT subscription_id, count(*) AS count FROM items GROUP BY 1) AS n
     WHERE g.id = n.subscription_id AND g.business_id = %(business_id)s
    RETURNING g.id),
notified AS (
    UPDATE stores AS s SET last_notified_at = now()
     WHERE s.business_id = %(business_id)s AND s.id IN (SELECT store_id FROM items)
    RETURNING s.id)
SELECT (SELECT count(*) FROM inserted) AS recorded;

-- name: count_notification_drops
-- Notifications refused, counted by reason.
INSERT INTO notification_drops AS d (reason, count, last_at)
VALUES (%(reason)s, %(count)s, now())
ON CONFLICT (reason) DO UPDATE SET count = d.count + EXCLUDED.count, last_at = now();

-- name: notification_drops
-- The refused notifications, by reason.
SELECT reason, count, last_at FROM notification_drops ORDER BY reason;

-- name: forget_store_subscription
-- The store's stored subscription, before a new one is saved (one per mailbox; in one
-- statement with the insert the unique index would still see the old row).
DELETE FROM graph_subscriptions
 WHERE business_id = %(business_id)s AND store_id = %(store_id)s AND id <> %(id)s;

-- name: save_subscription
-- A new subscription of a store (forget_store_subscription first, same transaction).
INSERT INTO graph_subscriptions (id, business_id, store_id, resource, client_state_sha256,
                                 notification_url, expires_at)
VALUES (%(id)s, %(business_id)s, %(store_id)s, %(resource)s, %(client_state_sha256)s,
        %(notification_url)s, %(expires_at)s)
ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
RETURNING *;

-- name: renew_subscription
-- The expiry Graph granted on renewal.
UPDATE graph_subscriptions
   SET expires_at = %(expires_at)s, renewed_at = now()
 WHERE id = %(id)s AND business_id = %(business_id)s
RETURNING *;

-- name: delete_subscription
-- A subscription that is gone from Graph (deleted, expired, re-created).
DELETE FROM graph_subscriptions WHERE id = %(id)s AND business_id = %(business_id)s
RETURNING id;

-- name: subscription_plan
-- Every store of the business that has a subscription or should have one, with both sides:
-- wanted (registered and enabled) and the subscription as stored.
SELECT s.id AS store_id, s.mailbox, (s.registered_at IS NOT NULL AND s.enabled) AS wanted,
       g.id AS subscription_id, g.expires_at, g.notification_url, g.resource
  FROM stores AS s
  LEFT JOIN graph_subscriptions AS g ON g.store_id = s.id AND g.business_id = s.business_id
 WHERE s.business_id = %(business_id)s
   AND ((s.registered_at IS NOT NULL AND s.enabled) OR g.id IS NOT NULL)
 ORDER BY s.mailbox;

-- name: subscription_of_store
-- The store's subscription, if any.
SELECT * FROM graph_subscriptions
 WHERE business_id = %(business_id)s AND store_id = %(store_id)s;

-- name: subscription_ids
-- Every subscription id the business stores (reconciliation against GET /subscriptions).
SELECT id FROM graph_subscriptions WHERE business_id = %(business_id)s;

-- name: notification_pending_businesses
-- The businesses whose notifications wait for the relay. The relay's one question across
-- tenants.
SELECT business_id FROM notification_pending_businesses();

-- name: pending_notifications
-- The business's waiting notifications, one row per store: the range of outbox ids, how
-- many, the lifecycle events among them, and whether a job of the store is active (then
-- the relay waits for it to end: a sync started now would resume it, and the changes that
-- came after it started need one more sync). Two relays at once would send the same
-- event id, which Prefect's triggers take once.
SELECT o.store_id, s.mailbox, s.folder, min(o.id) AS first_id, max(o.id) AS last_id,
       count(*) AS notifications, min(o.received_at) AS first_received_at,
       array_agg(DISTINCT o.kind) AS kinds,
       EXISTS (SELECT 1 FROM sync_queue AS q
                WHERE q.store_id = o.store_id AND q.status IN ('pending', 'running')) AS busy
  FROM notification_outbox AS o
  JOIN stores AS s ON s.id = o.store_id
 WHERE o.business_id = %(business_id)s AND o.relayed_at IS NULL
 GROUP BY o.store_id, s.mailbox, s.folder
 ORDER BY min(o.id);

-- name: mark_relayed
-- The store's notifications up to %(last_id)s are relayed.
UPDATE notification_outbox
   SET relayed_at = now()
 WHERE business_id = %(business_id)s AND store_id = %(store_id)s AND id <= %(last_id)s
   AND relayed_at IS NULL;

-- name: store_notification_state
-- mailbox list's columns: the subscription's expiry and the silent-loss counter.
SELECT s.id AS store_id, g.id AS subscription_id, g.expires_at AS subscription_expires_at,
       g.last_notification_at, s.missed_changes
  FROM stores AS s
  LEFT JOIN graph_subscriptions AS g ON g.store_id = s.id AND g.business_id = s.business_id
 WHERE s.business_id = %(business_id)s AND s.registered_at IS NOT NULL;

-- name: record_missed_for_store
-- A notification of our own making: the store's subscription was re-created, so changes
-- in the gap were never announced; the relay turns it into a sync like any 'missed'.
INSERT INTO notification_outbox (business_id, store_id, subscription_id, kind)
VALUES (%(business_id)s, %(store_id)s, %(subscription_id)s, 'missed');

-- name: prune_relayed_notifications
-- Relayed rows older than %(keep_days)s days: their syncs ran long ago, and the
-- missed-changes check (0017) looks back only to the previous job (polled hourly).
DELETE FROM notification_outbox
 WHERE business_id = %(business_id)s AND relayed_at IS NOT NULL
   AND received_at < now() - make_interval(days => %(keep_days)s);

-- name: store_job_since
-- Whether a job of the store was opened since %(since)s (the relay's check that the event
-- it sent started a sync).
SELECT EXISTS (SELECT 1 FROM sync_queue
                WHERE business_id = %(business_id)s AND store_id = %(store_id)s
                  AND created_at >= %(since)s) AS started;

-- name: changed_mailboxes
-- The business's registered, enabled mailboxes with a change no job has started after: a
-- notification (any kind but reauthorizationRequired, which needs no sync) received after
-- the store's newest job was created, and no job of the store active now. Decided from the
-- rows alone, so nothing is lost when Prefect coalesces the events that announced them: a
-- job created after a notification was received reads Graph after the change it announced
-- (the change came first, then Graph's POST, then the insert), so it covers it. ready: the
-- first such notification is %(debounce_s)s old, so the rest of its burst is in (a burst of
-- 100 notifications is one sync); the others are waited for. Oldest change first.
SELECT s.id AS store_id, s.business_id, s.mailbox, s.folder, c.first_at,
       c.first_at <= now() - make_interval(secs => %(debounce_s)s) AS ready
  FROM stores AS s
 CROSS JOIN LATERAL (
     SELECT min(o.received_at) AS first_at
       FROM notification_outbox AS o
      WHERE o.store_id = s.id AND o.business_id = s.business_id
        AND o.kind <> 'reauthorizationRequired'
        AND o.received_at > coalesce((SELECT max(q.created_at) FROM sync_queue AS q
                                       WHERE q.store_id = s.id), '-infinity')) AS c
 WHERE s.business_id = %(business_id)s
   AND s.registered_at IS NOT NULL AND s.enabled
   AND c.first_at IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM sync_queue AS q
                    WHERE q.store_id = s.id AND q.status IN ('pending', 'running'))
 ORDER BY c.first_at, s.mailbox
 LIMIT %(limit)s;
