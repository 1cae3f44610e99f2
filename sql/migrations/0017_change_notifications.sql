-- Change notifications (issue 24): Graph tells us a mailbox changed, the receiver writes it
-- down, a relay turns it into a Prefect event that starts the mailbox's incremental sync.
--
-- * graph_subscriptions: one Graph subscription per registered, enabled mailbox. Its
--   clientState is a random secret Graph echoes in every notification; only its sha256 is
--   kept (a database dump does not let anyone forge notifications).
-- * notification_outbox: every accepted notification, written before the receiver answers
--   202 (Graph retries anything not answered 2xx within 3 s, so the request path does
--   nothing but this insert). The relay marks rows relayed once their event is sent.
-- * notification_drops: notifications refused (unknown subscription, wrong clientState),
--   counted per reason. It holds no tenant data (no business_id): an unknown subscription
--   has no tenant to charge it to.
-- * stores.missed_changes: polls that found changes no notification announced (silent
--   notification loss); stores.last_notified_at: the newest notification of the mailbox.
--
-- Tenancy: the receiver knows only Graph's subscription id when a POST comes in. The one
-- question it asks across tenants is notification_subscriptions(ids): for each id, whose
-- store it is and the hash to compare with (SECURITY DEFINER, like job_business_id in
-- 0004). Everything after that (the outbox insert, the counters) runs as the worker under
-- that tenant's policy. The relay likewise learns only which businesses have pending rows
-- (notification_pending_businesses) and then works as each of them.

-- 1. Tables --------------------------------------------------------------------------------
CREATE TABLE graph_subscriptions (
    id                   text        PRIMARY KEY,   -- Graph's subscription id
    business_id          uuid        NOT NULL,
    store_id             uuid        NOT NULL,
    resource             text        NOT NULL,      -- users/{id}/messages
    client_state_sha256  bytea       NOT NULL CHECK (length(client_state_sha256) = 32),
    notification_url     text        NOT NULL,
    expires_at           timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    renewed_at           timestamptz,
    last_notification_at timestamptz,
    notifications        bigint      NOT NULL DEFAULT 0,
    FOREIGN KEY (store_id, business_id) REFERENCES stores (id, business_id) ON DELETE CASCADE
);
-- One per mailbox: a re-created subscription replaces the row in one transaction.
CREATE UNIQUE INDEX graph_subscriptions_store ON graph_subscriptions (store_id);
CREATE INDEX graph_subscriptions_expiry ON graph_subscriptions (business_id, expires_at);

CREATE TABLE notification_outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id     uuid        NOT NULL,
    store_id        uuid        NOT NULL,
    subscription_id text        NOT NULL,   -- no foreign key: a row outlives a re-creation
    kind            text        NOT NULL CHECK (kind IN (
        'created', 'updated', 'deleted',
        'missed', 'subscriptionRemoved', 'reauthorizationRequired')),
    resource        text,                   -- Users/{uid}/Messages/{id}; none for lifecycle
    received_at     timestamptz NOT NULL DEFAULT now(),
    relayed_at      timestamptz,
    FOREIGN KEY (store_id, business_id) REFERENCES stores (id, business_id) ON DELETE CASCADE
);
CREATE INDEX notification_outbox_pending ON notification_outbox (business_id, store_id, id)
    WHERE relayed_at IS NULL;
CREATE INDEX notification_outbox_received ON notification_outbox (store_id, received_at);

CREATE TABLE notification_drops (
    reason  text        PRIMARY KEY CHECK (reason IN ('unknown_subscription', 'client_state',
                                                      'malformed')),
    count   bigint      NOT NULL DEFAULT 0,
    last_at timestamptz
);

ALTER TABLE stores
    ADD COLUMN missed_changes   integer     NOT NULL DEFAULT 0,
    ADD COLUMN last_notified_at timestamptz;

-- 2. The cross-tenant questions ------------------------------------------------------------
-- For each subscription id: its business, store and clientState hash; unknown ids are
-- absent. Nothing else of any tenant.
CREATE FUNCTION notification_subscriptions(p_ids text[])
RETURNS TABLE (id text, business_id uuid, store_id uuid, client_state_sha256 bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT g.id, g.business_id, g.store_id, g.client_state_sha256
      FROM graph_subscriptions AS g
     WHERE g.id = ANY (p_ids);
$$;

-- The businesses that have notifications waiting for the relay.
CREATE FUNCTION notification_pending_businesses()
RETURNS TABLE (business_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT DISTINCT o.business_id FROM notification_outbox AS o WHERE o.relayed_at IS NULL;
$$;

-- 3. Row-level security, ownership, grants --------------------------------------------------
ALTER TABLE graph_subscriptions ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON graph_subscriptions
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

ALTER TABLE notification_outbox ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON notification_outbox
    USING (business_id = current_business_id())
    WITH CHECK (business_id = current_business_id());

ALTER TABLE graph_subscriptions OWNER TO mailsync_owner;
ALTER TABLE notification_outbox OWNER TO mailsync_owner;
ALTER TABLE notification_drops OWNER TO mailsync_owner;
-- Owned by the role that may look across tenants: a SECURITY DEFINER function runs with
-- its owner's rights (as job_business_id does).
ALTER FUNCTION notification_subscriptions(text[]) OWNER TO mailsync_maintenance;
ALTER FUNCTION notification_pending_businesses() OWNER TO mailsync_maintenance;

REVOKE ALL ON graph_subscriptions, notification_outbox, notification_drops FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION notification_subscriptions(text[]), notification_pending_businesses()
FROM PUBLIC;

GRANT SELECT, INSERT, UPDATE, DELETE ON graph_subscriptions TO mailsync_worker;
-- DELETE: the relay prunes relayed rows past a week (sql/notifications.sql).
GRANT SELECT, INSERT, UPDATE, DELETE ON notification_outbox TO mailsync_worker;
GRANT SELECT, INSERT, UPDATE ON notification_drops TO mailsync_worker;
GRANT EXECUTE ON FUNCTION notification_subscriptions(text[]), notification_pending_businesses()
TO mailsync_worker;
GRANT SELECT ON graph_subscriptions, notification_outbox, notification_drops
TO mailsync_reporting;
GRANT SELECT, UPDATE, DELETE ON graph_subscriptions, notification_outbox, notification_drops
TO mailsync_maintenance;

-- 4. Silent notification loss --------------------------------------------------------------
-- A job that ends 'completed' having written messages, for a mailbox that had a
-- subscription since before the previous job started, while no notification of that
-- mailbox came between the previous job's start and this job's end: the changes it found
-- were never announced. Decided from the rows alone, so it holds however the job was
-- started (sync-all's poll, a CLI sync); a notification-started job always has its
-- notification in that window. Runs as whoever closes the job, under its tenant.
CREATE FUNCTION notification_record_missed()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_previous_start timestamptz;
BEGIN
    IF NEW.status <> 'completed' OR OLD.status NOT IN ('pending', 'running')
       OR NEW.emails_processed = 0 THEN
        RETURN NULL;
    END IF;
    SELECT max(q.started_at) INTO v_previous_start
      FROM sync_queue AS q
     WHERE q.store_id = NEW.store_id AND q.id <> NEW.id AND q.started_at < NEW.started_at;
    IF v_previous_start IS NULL THEN
        RETURN NULL;  -- the first sync: everything is new, nothing was to be announced
    END IF;
    IF EXISTS (SELECT 1 FROM graph_subscriptions AS g
                WHERE g.store_id = NEW.store_id AND g.created_at < v_previous_start)
       AND NOT EXISTS (SELECT 1 FROM notification_outbox AS o
                        WHERE o.store_id = NEW.store_id
                          AND o.received_at > v_previous_start
                          AND o.received_at <= coalesce(NEW.completed_at, now())) THEN
        UPDATE stores SET missed_changes = missed_changes + 1 WHERE id = NEW.store_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER sync_queue_missed_notifications
    AFTER UPDATE OF status ON sync_queue
    FOR EACH ROW EXECUTE FUNCTION notification_record_missed();

ALTER FUNCTION notification_record_missed() OWNER TO mailsync_owner;
REVOKE EXECUTE ON FUNCTION notification_record_missed() FROM PUBLIC;
