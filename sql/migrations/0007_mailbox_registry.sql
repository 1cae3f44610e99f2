-- Many mailboxes (issue 10): the mailbox registry, and Graph's limits held across workers.
--
-- * The registry is the stores table itself: a store is one mailbox of one business
--   (0006), and a registered store is one that sync-all keeps current. A store that only
--   an ad-hoc `mailsync sync` created has registered_at NULL and is never picked.
-- * Who is due, and whether a mailbox backs off, is decided here: the claim statement
--   (sql/registry.sql, claim_due_mailboxes) advances next_due_at as it picks, and the
--   trigger below records every job's outcome on its store, however the job ran (sync-all,
--   a CLI sync, a job resumed by the cleanup).
-- * graph_limits / graph_leases: per mailbox (and one row for the whole app) a token bucket
--   and in-flight leases, taken before every Graph request by every worker
--   (mailsync/limits.py). Their keys are digests, so they hold no tenant data.

-- 1. The registry: columns of stores --------------------------------------------------------
ALTER TABLE stores
    ADD COLUMN registered_at        timestamptz,   -- in the registry since; NULL: not registered
    ADD COLUMN enabled              boolean     NOT NULL DEFAULT true,   -- false: paused
    ADD COLUMN interval_minutes     integer     NOT NULL DEFAULT 60
        CHECK (interval_minutes BETWEEN 1 AND 10080),
    ADD COLUMN next_due_at          timestamptz,   -- sync-all starts it from then on
    ADD COLUMN last_claimed_at      timestamptz,   -- when a sync-all last started it
    ADD COLUMN last_job_id          uuid,          -- its newest job (no foreign key: retention)
    ADD COLUMN last_status          text,          -- that job's status when it last changed
    ADD COLUMN last_finished_at     timestamptz,
    ADD COLUMN last_success_at      timestamptz,   -- the last job that ended 'completed'
    ADD COLUMN consecutive_failures integer     NOT NULL DEFAULT 0,
    ADD COLUMN last_error           text;

CREATE INDEX stores_due ON stores (business_id, next_due_at)
    WHERE registered_at IS NOT NULL AND enabled;

-- After this many failed jobs in a row a mailbox backs off, and is a problem mailbox.
CREATE FUNCTION registry_backoff_after()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 3 $$;

-- How long a mailbox waits between syncs: its interval; once it has failed
-- registry_backoff_after() times in a row, twice as long for each further failure, up to a
-- day (or its own interval, when that is longer).
CREATE FUNCTION registry_wait(p_interval_minutes integer, p_failures integer)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT make_interval(mins => CASE
        WHEN p_failures < registry_backoff_after() THEN p_interval_minutes
        ELSE greatest(p_interval_minutes, least(
            p_interval_minutes * power(2, least(p_failures - registry_backoff_after() + 1, 20)),
            1440))::integer
    END);
$$;

-- What a registered mailbox's row says about it, in one word (mailbox list, sync-all).
CREATE FUNCTION registry_health(p_store stores)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN NOT p_store.enabled THEN 'paused'
        WHEN p_store.consecutive_failures >= registry_backoff_after() THEN 'backing_off'
        WHEN p_store.consecutive_failures > 0 THEN 'failing'
        WHEN p_store.last_success_at IS NULL THEN 'new'
        ELSE 'ok'
    END;
$$;

-- A job's life, recorded on its store: a new job is the store's last job; a job that
-- finishes sets its outcome, the failure streak and, for a failure that makes the streak
-- long enough, the backoff (next_due_at moves out; never earlier than it was).
CREATE FUNCTION registry_record_job()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE stores
           SET last_job_id = NEW.id, last_status = NEW.status
         WHERE id = NEW.store_id;
    ELSIF NEW.status IN ('completed', 'partial_failure', 'failed')
          AND OLD.status IN ('pending', 'running') THEN
        UPDATE stores AS s
           SET last_job_id = NEW.id,
               last_status = NEW.status,
               last_finished_at = coalesce(NEW.completed_at, now()),
               last_success_at = CASE WHEN NEW.status = 'completed'
                                      THEN coalesce(NEW.completed_at, now())
                                      ELSE s.last_success_at END,
               consecutive_failures = CASE WHEN NEW.status = 'completed' THEN 0
                                           ELSE s.consecutive_failures + 1 END,
               last_error = CASE WHEN NEW.status = 'completed' THEN NULL
                                 ELSE left(coalesce(NEW.error_category || ': ', '')
                                           || coalesce(NEW.error_message, NEW.status), 500) END,
               next_due_at = CASE
                   WHEN NEW.status = 'completed' OR s.registered_at IS NULL THEN s.next_due_at
                   ELSE greatest(s.next_due_at,
                                 now() + registry_wait(s.interval_minutes,
                                                       s.consecutive_failures + 1)) END
         WHERE s.id = NEW.store_id;
    ELSIF NEW.status = 'running' THEN
        UPDATE stores SET last_job_id = NEW.id, last_status = NEW.status
         WHERE id = NEW.store_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER sync_queue_registry
    AFTER INSERT OR UPDATE OF status ON sync_queue
    FOR EACH ROW EXECUTE FUNCTION registry_record_job();

-- 2. Graph's limits, shared by every worker ------------------------------------------------
-- One row per limit: 'app' (the whole application) or 'mailbox:<digest of the app, tenant
-- and mailbox>'. A token bucket (capacity, refill_per_s) bounds the requests in any window;
-- leases bound the requests in flight; paused_until holds a mailbox back after Graph's 429
-- with Retry-After. UNLOGGED: the state is worth nothing after a crash (a lost table comes
-- back empty and its rows are recreated full), and a commit that wrote only unlogged rows
-- does not wait for a WAL flush: two of these per Graph request stay cheap.
CREATE UNLOGGED TABLE graph_limits (
    key            text             PRIMARY KEY,
    max_in_flight  integer          NOT NULL CHECK (max_in_flight >= 1),
    capacity       double precision NOT NULL CHECK (capacity >= 1),
    refill_per_s   double precision NOT NULL CHECK (refill_per_s > 0),
    tokens         double precision NOT NULL,
    refilled_at    timestamptz      NOT NULL DEFAULT clock_timestamp(),
    paused_until   timestamptz,
    requests       bigint           NOT NULL DEFAULT 0,  -- slots granted
    throttled      bigint           NOT NULL DEFAULT 0,  -- 429s reported back
    waits          bigint           NOT NULL DEFAULT 0   -- acquisitions told to wait
);

CREATE UNLOGGED TABLE graph_leases (
    lease_id   uuid        NOT NULL,
    key        text        NOT NULL REFERENCES graph_limits (key) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,  -- a holder that died frees its slot here
    PRIMARY KEY (key, lease_id)
);
CREATE INDEX graph_leases_lease ON graph_leases (lease_id);

-- Take one request slot of every limit in p_limits (a JSON array of {key, max_in_flight,
-- capacity, refill_per_s}), or say how long to wait, in one statement. The limits' rows are
-- created or re-sized from the caller's settings and locked in key order (no deadlock
-- between two callers). A slot is granted only when every limit has one: not paused, fewer
-- than max_in_flight live leases, a whole token. Otherwise nothing is taken and wait_s says
-- when the scarcest limit is worth asking again (a pause's end, the next token; a free
-- in-flight slot cannot be predicted: 0) and reason which limit it was.
CREATE FUNCTION acquire_graph_slot(p_limits jsonb, p_lease_s double precision)
RETURNS TABLE (lease_id uuid, wait_s double precision, reason text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_lease uuid := gen_random_uuid();
    v_keys text[];
    v_wait double precision := -1;
    v_reason text;
    v graph_limits;
    v_in_flight integer;
    v_tokens double precision;
    v_this double precision;
BEGIN
    INSERT INTO graph_limits AS g (key, max_in_flight, capacity, refill_per_s, tokens)
    SELECT x.key, x.max_in_flight, x.capacity, x.refill_per_s, x.capacity
      FROM jsonb_to_recordset(p_limits)
           AS x(key text, max_in_flight integer, capacity double precision,
                refill_per_s double precision)
     ORDER BY x.key
    ON CONFLICT (key) DO UPDATE
       SET max_in_flight = EXCLUDED.max_in_flight, capacity = EXCLUDED.capacity,
           refill_per_s = EXCLUDED.refill_per_s
     WHERE (g.max_in_flight, g.capacity, g.refill_per_s)
           IS DISTINCT FROM (EXCLUDED.max_in_flight, EXCLUDED.capacity, EXCLUDED.refill_per_s);
    SELECT array_agg(x.key ORDER BY x.key) INTO v_keys
      FROM jsonb_to_recordset(p_limits) AS x(key text);
    FOR v IN SELECT * FROM graph_limits AS g WHERE g.key = ANY (v_keys) ORDER BY g.key
             FOR UPDATE LOOP
        DELETE FROM graph_leases AS l WHERE l.key = v.key AND l.expires_at < v_now;
        v_tokens := least(v.capacity,
                          v.tokens + v.refill_per_s * extract(epoch FROM v_now - v.refilled_at));
        UPDATE graph_limits SET tokens = v_tokens, refilled_at = v_now WHERE key = v.key;
        SELECT count(*) INTO v_in_flight FROM graph_leases AS l WHERE l.key = v.key;
        v_this := -1;
        IF v.paused_until > v_now THEN
            v_this := extract(epoch FROM v.paused_until - v_now);
            v_reason := coalesce(v_reason, 'paused: ' || v.key);
        ELSIF v_in_flight >= v.max_in_flight THEN
            v_this := 0;
            v_reason := coalesce(v_reason, 'in flight: ' || v.key);
        ELSIF v_tokens < 1 THEN
            v_this := (1 - v_tokens) / v.refill_per_s;
            v_reason := coalesce(v_reason, 'budget: ' || v.key);
        END IF;
        v_wait := greatest(v_wait, v_this);
    END LOOP;
    IF v_wait >= 0 THEN
        UPDATE graph_limits AS g SET waits = g.waits + 1 WHERE g.key = ANY (v_keys);
        RETURN QUERY SELECT NULL::uuid, v_wait, v_reason;
        RETURN;
    END IF;
    UPDATE graph_limits AS g SET tokens = g.tokens - 1, requests = g.requests + 1
     WHERE g.key = ANY (v_keys);
    INSERT INTO graph_leases (lease_id, key, expires_at)
    SELECT v_lease, k, v_now + make_interval(secs => p_lease_s) FROM unnest(v_keys) AS k;
    RETURN QUERY SELECT v_lease, 0::double precision, NULL::text;
END;
$$;

-- 3. Ownership, grants -------------------------------------------------------------------
ALTER TABLE graph_limits OWNER TO mailsync_owner;
ALTER TABLE graph_leases OWNER TO mailsync_owner;
ALTER FUNCTION registry_backoff_after() OWNER TO mailsync_owner;
ALTER FUNCTION registry_wait(integer, integer) OWNER TO mailsync_owner;
ALTER FUNCTION registry_health(stores) OWNER TO mailsync_owner;
ALTER FUNCTION registry_record_job() OWNER TO mailsync_owner;
ALTER FUNCTION acquire_graph_slot(jsonb, double precision) OWNER TO mailsync_owner;
REVOKE ALL ON graph_limits, graph_leases FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    registry_record_job(),
    acquire_graph_slot(jsonb, double precision)
FROM PUBLIC;
-- A trigger needs no EXECUTE grant to fire; its statements run as whoever changes the job:
-- the worker (its tenant's store, under the policy) or maintenance (the cleanup closing
-- jobs; it may UPDATE every store).
GRANT SELECT, INSERT, UPDATE, DELETE ON graph_limits, graph_leases TO mailsync_worker;
GRANT EXECUTE ON FUNCTION acquire_graph_slot(jsonb, double precision) TO mailsync_worker;
GRANT SELECT ON graph_limits, graph_leases TO mailsync_reporting, mailsync_maintenance;
